"""Pick baseline parameters on validation splits carved from training parts, never test.

* ``movielens``: the benchmark's ``holdout-user`` split of the bundled MovieLens (20% of
  each user's events, seed 0) gives the training part; a second ``holdout-user`` split of
  that part (20%, seed 1) gives ``(fit, validation)``. Scored like ``evaluate_holdout``
  (top 10, every validation item relevant, the user's fit items excluded); the criterion
  is NDCG@10.
* ``yoochoose``: the sample's ``train_tr`` (fit) and ``train_valid`` (validation), scored
  next-click like the benchmark: prequential over ``train_valid`` after fitting on
  ``train_tr``, a session's first click not scored, top 20; the criterion is MRR@20.

``python -m models.tuning MODEL DATA --grid '{"k_neighbours": [50, 100]}'`` scores every
combination of the grid's values (other parameters at their defaults) and prints one line
per combination, best first, with the fit time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from models.baselines import ItemKNNRecommender, Recommender
from models.datasets import BUNDLED_MOVIELENS, load_movielens, load_yoochoose
from models.ease import EASERecommender
from models.evaluation import TimedFit
from models.events import Event
from models.protocols import evaluate_holdout, evaluate_prequential, holdout_split
from models.sequential_rules import SequentialRulesRecommender
from models.sessionknn import VSKNNRecommender

YOOCHOOSE_SAMPLE: Final = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose-clicks-sample"
)
"""The YOOCHOOSE sample in the team's shared data folder beside the checkout (``--path``
overrides it)."""
FACTORIES: Final[dict[str, Callable[..., Recommender]]] = {
    "itemknn": ItemKNNRecommender,
    "ease": EASERecommender,
    "vsknn": VSKNNRecommender,
    "sr": SequentialRulesRecommender,
}
Data = Literal["movielens", "yoochoose"]


@dataclass(frozen=True)
class Validation:
    """A fit part, a validation part and how to score a model on them."""

    data: Data
    fit: list[Event]
    valid: list[Event]

    @property
    def criterion(self) -> str:
        return "ndcg@10" if self.data == "movielens" else "mrr@20"

    def score(self, model: Recommender) -> dict[str, float]:
        """The validation metrics of ``model`` plus ``fit_seconds`` (of its one ``fit``)."""
        timed = TimedFit(model)
        if self.data == "movielens":
            result = evaluate_holdout(timed, self.fit, self.valid, ks=(10,))
        else:
            result = evaluate_prequential(
                timed, self.fit + self.valid, ks=(20,), warmup=len(self.fit), score_new_users=False
            )
        return result | timed.report()


def movielens_validation(directory: Path = BUNDLED_MOVIELENS) -> Validation:
    """``(fit, validation)`` inside the training part of the benchmark's holdout-user split."""
    train, _test = holdout_split(load_movielens(directory).events, ratio=0.2, seed=0, by="user")
    fit, valid = holdout_split(train, ratio=0.2, seed=1, by="user")
    return Validation("movielens", fit, valid)


def yoochoose_validation(directory: Path = YOOCHOOSE_SAMPLE) -> Validation:
    """``train_tr`` to fit, ``train_valid`` to validate (both inside ``train_full``)."""
    fit = load_yoochoose(directory / "yoochoose-clicks-100k_train_tr.txt").events
    valid = load_yoochoose(directory / "yoochoose-clicks-100k_train_valid.txt").events
    return Validation("yoochoose", fit, valid)


def grid_search(
    model: str,
    validation: Validation,
    grid: Mapping[str, Sequence[Any]],
    report: Callable[[dict[str, Any], dict[str, float]], None] | None = None,
) -> list[tuple[dict[str, Any], dict[str, float]]]:
    """Every combination of ``grid``'s values scored on ``validation``, best first.

    ``report(params, result)`` is called after each combination."""
    factory = FACTORIES[model]
    names = list(grid)
    rows = []
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        result = validation.score(factory(**params))
        rows.append((params, result))
        if report is not None:
            report(params, result)
    return sorted(rows, key=lambda row: -row[1][validation.criterion])


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m models.tuning")
    parser.add_argument("model", choices=sorted(FACTORIES))
    parser.add_argument("data", choices=["movielens", "yoochoose"])
    parser.add_argument("--grid", default="{}", help="JSON: parameter -> list of values")
    parser.add_argument("--path", type=Path, help="MovieLens dir or YOOCHOOSE sample dir")
    args = parser.parse_args(argv)
    grid = json.loads(args.grid)
    if args.data == "movielens":
        validation = movielens_validation(args.path or BUNDLED_MOVIELENS)
        metrics: tuple[str, ...] = ("hr@10", "ndcg@10", "mrr@10")
    else:
        validation = yoochoose_validation(args.path or YOOCHOOSE_SAMPLE)
        metrics = ("hr@20", "mrr@20", "ndcg@20")
    print(f"{args.model} on {args.data} validation: criterion {validation.criterion}")

    def line(params: dict[str, Any], result: dict[str, float]) -> str:
        scores = "  ".join(f"{m} {result[m]:.4f}" for m in metrics)
        tuned = "".join(f"  {k} {v:g}" for k, v in result.items() if k.startswith("tuned_"))
        return f"{json.dumps(params)}  {scores}  fit {result['fit_seconds']:.1f} s{tuned}"

    def report(params: dict[str, Any], result: dict[str, float]) -> None:
        print(line(params, result), flush=True)

    rows = grid_search(args.model, validation, grid, report)
    print("best: " + line(*rows[0]))


if __name__ == "__main__":
    main()
