"""The price of exploring: Eddy's NDCG greedy and epsilon-greedy, measured and estimated.

``explore_report`` fits Eddy once (the ``eddy`` model of ``models.evaluation``, with no
protected slots, so that the logging policy explores every slot) and, for every round,
ranks through the worker's own step (``EddyRecommender.rank``):

* the greedy list (no trace): the greedy policy's NDCG at that state;
* ``draws`` logged lists at ``logging_epsilon`` with their slot propensities, kept as a
  ``models.offpolicy.SlateLog``; in prequential replay the logged list is the one shown
  (its impressions and shows are learned, as in the worker);
* ``draws`` lists per epsilon of the grid (no trace): that policy's NDCG, measured
  directly at the same states.

A round is a test user (holdout and temporal protocols: every test item relevant) or a
scored event (prequential: the event's item relevant, as ``evaluate_prequential``). A
slot's reward is its NDCG@k share, ``rel / log2(s + 2) / IDCG(min(k, |R|))``. Each
target policy (epsilon of the grid x protected slots) then gets its IPS / SNIPS / DR
estimate with bootstrap intervals over users from the logged lists alone, next to the
direct value where one was measured (``direct_protected``, 0 by default), which checks
the estimators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from models.datasets import Dataset
from models.engine import EddyRecommender
from models.evaluation import EvalConfig, capped, split
from models.evaluation import Progress as NamedProgress
from models.events import Event
from models.metrics import ndcg_at_k
from models.offpolicy import EpsilonPolicy, LogBuilder, as_row, decode_slot, estimate, mean_interval
from models.protocols import items_by_user, time_key
from models.reclist import RecItem
from models.recommender import DEFAULT_EPSILON

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExploreConfig:
    """What ``explore_report`` measures."""

    epsilons: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    protected: tuple[int, ...] = (0, 1, 2, 3)
    logging_epsilon: float = DEFAULT_EPSILON.epsilon0
    """Exploration of the logged lists, in (0, 0.5]: the worker's default, so the logs
    are what the worker would write. A larger one supports larger targets, but its
    greedy weights grow like ``(1 - epsilon) ** -k``."""
    draws: int = 1
    """Logged and direct lists per round (holdout: more draws, tighter intervals)."""
    n_boot: int = 500
    seed: int = 0
    direct_protected: int = 0
    """Protected slots of the directly measured lists (holdout protocols only: a second
    model, fitted the same way, ranks them), to check the estimates at that setting."""

    def __post_init__(self) -> None:
        if not 0.0 < self.logging_epsilon <= 0.5:
            raise ValueError(f"logging_epsilon must be in (0, 0.5], got {self.logging_epsilon}")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")
        for e in self.epsilons:
            EpsilonPolicy(e)
        for p in (*self.protected, self.direct_protected):
            EpsilonPolicy(0.0, p)


def _idcg(n_relevant: int, k: int) -> float:
    return sum(1.0 / math.log2(p + 2) for p in range(min(k, n_relevant)))


class _Rounds:
    """Everything the rounds measure, accumulated."""

    def __init__(self, k: int, cfg: ExploreConfig) -> None:
        self.k, self.cfg = k, cfg
        self.log = LogBuilder(k)
        self.groups: list[str] = []
        self.greedy: list[float] = []
        self.direct: dict[float, list[float]] = {e: [] for e in cfg.epsilons}

    def play(
        self,
        model: EddyRecommender,
        user: str,
        relevant: Collection[str],
        exclude: Collection[str],
        online: bool,
        direct_model: EddyRecommender | None = None,
    ) -> None:
        """One round: the greedy, logged and direct lists for ``user`` (the direct ones
        from ``direct_model`` if given)."""
        k, cfg = self.k, self.cfg
        idcg = _idcg(len(relevant), k)
        greedy = model.rank(user, k, exclude, epsilon=0.0, record=False)
        if not greedy or idcg == 0:
            return
        base = ndcg_at_k([i.item_id for i in greedy], relevant, k)
        for _ in range(cfg.draws):
            direct = {
                e: ndcg_at_k(
                    [i.item_id for i in (direct_model or model).rank(user, k, exclude, e, False)],
                    relevant,
                    k,
                )
                if e > 0
                else base
                for e in cfg.epsilons
            }
            logged = model.rank(user, k, exclude, cfg.logging_epsilon, record=online)
            self._log(user, logged, relevant, idcg)
            self.groups.append(user)
            self.greedy.append(base)
            for e, value in direct.items():
                self.direct[e].append(value)

    def _log(
        self, user: str, logged: Sequence[RecItem], relevant: Collection[str], idcg: float
    ) -> None:
        slots = [decode_slot(i.propensity, self.cfg.logging_epsilon) for i in logged]
        self.log.add(
            user,
            [float(i.item_id in relevant) / math.log2(s + 2) / idcg for s, i in enumerate(logged)],
            [i.propensity for i in logged],
            [g for g, _ in slots],
            [n for _, n in slots],
        )

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        if not self.groups:
            raise ValueError("no rounds scored: nothing to report")
        log = self.log.build()
        n_boot, seed = cfg.n_boot, cfg.seed
        direct: dict[str, dict[str, float]] = {}
        for e, values in self.direct.items():
            value = mean_interval(values, self.groups, n_boot, seed=seed)
            paired = [g - v for g, v in zip(self.greedy, values, strict=True)]
            price = mean_interval(paired, self.groups, n_boot, seed=seed)
            direct[str(e)] = {
                "ndcg": value.value,
                "ndcg_low": value.low,
                "ndcg_high": value.high,
                "price": price.value,
                "price_low": price.low,
                "price_high": price.high,
            }
        estimates: list[dict[str, float]] = []
        for p in cfg.protected:
            for e in cfg.epsilons:
                if e == 0 and p > 0:
                    continue  # greedy whatever the protected slots
                target = EpsilonPolicy(e, p)
                row = as_row(estimate(log, target, n_boot, seed=seed))
                greedy = EpsilonPolicy(0.0)
                cost = as_row(estimate(log, target, n_boot, seed=seed, baseline=greedy))
                row |= {f"price_{name}": v for name, v in cost.items()}
                measured = p == cfg.direct_protected or e == 0
                truth = direct.get(str(e), {}) if measured else {}
                row |= {f"direct_{key}": v for key, v in truth.items() if "_" not in key}
                estimates.append({"epsilon": e, "protected": p, **row})
        return {
            "k": self.k,
            "logging_epsilon": cfg.logging_epsilon,
            "draws": cfg.draws,
            "direct_protected": cfg.direct_protected,
            "rounds": log.rounds,
            "users": len(set(self.groups)),
            "greedy_ndcg": sum(self.greedy) / len(self.greedy),
            "logged_ndcg": log.value(),
            "direct": direct,
            "estimates": estimates,
        }


def explore_report(
    model: EddyRecommender,
    train: Sequence[Event],
    test: Sequence[Event],
    k: int,
    cfg: ExploreConfig,
    prequential: bool,
    skip_new_users: bool = False,
    progress: Progress | None = None,
    direct_model: EddyRecommender | None = None,
) -> dict[str, Any]:
    """Fit ``model`` on ``train``, play the rounds of ``test`` (module doc), report;
    ``direct_model`` (holdout only) ranks the directly measured lists."""
    if direct_model is not None and prequential:
        raise ValueError("a separate direct model needs a holdout protocol")
    model.fit(train)
    if direct_model is not None:
        direct_model.fit(train)
    rounds = _Rounds(k, cfg)
    seen = items_by_user(train)
    if not prequential:
        relevant = items_by_user(test)
        for n, user in enumerate(sorted(relevant), 1):
            exclude = seen.get(user, set())
            rounds.play(model, user, relevant[user], exclude, False, direct_model)
            if progress is not None:
                progress(n, len(relevant))
        return rounds.report()
    held = sorted(test, key=time_key)
    for n, event in enumerate(held, 1):
        history = seen.setdefault(event.user_id, set())
        if event.item_id not in history and (history or not skip_new_users):
            rounds.play(model, event.user_id, (event.item_id,), history, online=True)
        model.observe(event)
        history.add(event.item_id)
        if progress is not None:
            progress(n, len(held))
    return rounds.report()


def explore(
    dataset: Dataset,
    cfg: EvalConfig,
    xcfg: ExploreConfig,
    test: Sequence[Event] | None = None,
    progress: NamedProgress | None = None,
) -> dict[str, Any]:
    """``explore_report`` for Eddy under ``cfg``'s protocol, at ``k = max(cfg.ks)``."""
    train, held = split(dataset.events, cfg, test)
    prequential = cfg.protocol == "prequential"
    if prequential:
        train, held = capped(train, held, cfg.max_events)
    engine = cfg.engine
    rank = replace(engine.rank, protected_slots=0)  # the logging policy explores every slot
    model = EddyRecommender(dataset.items, replace(engine, rank=rank, online=True))
    direct_model = None
    if xcfg.direct_protected > 0:
        rank = replace(rank, protected_slots=xcfg.direct_protected)
        direct_model = EddyRecommender(dataset.items, replace(engine, rank=rank, online=True))
    return explore_report(
        model,
        train,
        held,
        max(cfg.ks),
        xcfg,
        prequential,
        cfg.skip_new_users,
        None if progress is None else (lambda done, total: progress("explore", done, total)),
        direct_model,
    )
