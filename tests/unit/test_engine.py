"""The in-process model that ``eddy evaluate`` scores, and the evaluation harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models.datasets import Dataset
from models.engine import EddyRecommender, EngineConfig
from models.evaluation import MODELS, EvalConfig, bandit_replay, evaluate
from models.events import Event, EventType, ItemUpsert
from models.recommender import DEFAULT_PROTECTED_SLOTS
from models.training import TrainConfig
from streams.cli import app
from streams.settings import Settings
from streams.worker import step_config

T0 = 1_700_000_000.0
SPACE = [f"s{n}" for n in range(1, 7)]
GARDEN = [f"g{n}" for n in range(1, 7)]
ITEMS = [
    *(ItemUpsert(item_id=i, title=f"Space Rocket {i}", categories=("Books",)) for i in SPACE),
    *(ItemUpsert(item_id=i, title=f"Garden Rose {i}", categories=("Books",)) for i in GARDEN),
]
CONFIG = EngineConfig(train=TrainConfig(dim=8, content_holdout=0.0))


def click(user: str, item: str, ts: float) -> Event:
    return Event(type=EventType.CLICK, user_id=user, item_id=item, ts=T0 + ts)


def history(n_users: int = 40) -> list[Event]:
    """Odd users click space items, even users garden items (one category for all)."""
    events = []
    for n in range(n_users):
        group = SPACE if n % 2 else GARDEN
        events += [click(f"h{n}", item, n * 10 + k) for k, item in enumerate(group)]
    return events


def fitted(online: bool = True) -> EddyRecommender:
    model = EddyRecommender(ITEMS, EngineConfig(train=CONFIG.train, online=online))
    model.fit(history())
    return model


def test_the_engine_ranks_with_the_workers_popular_lists_and_history() -> None:
    worker = step_config(Settings(_env_file=None), None)
    engine = EddyRecommender(ITEMS)._step_config(online=True)
    assert engine.pool == worker.pool
    assert engine.profile.history_size == worker.profile.history_size == 2000


def test_recommend_before_fit_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        EddyRecommender(ITEMS).recommend("u", 3)


def test_a_user_gets_the_rest_of_their_taste_group() -> None:
    model = fitted()
    model.observe(click("reader", "s1", 1000))
    model.observe(click("reader", "s2", 1001))
    top = model.recommend("reader", 4)
    assert len(top) == 4
    assert set(top) <= set(SPACE) - {"s1", "s2"}  # vectors split the one category


def test_excluded_items_never_appear() -> None:
    model = fitted()
    model.observe(click("reader", "s1", 1000))
    top = model.recommend("reader", 5, exclude={"s2", "s3"})
    assert not {"s1", "s2", "s3"} & set(top)
    assert len(top) == 5


def test_an_unknown_user_gets_popular_items() -> None:
    top = fitted().rank("stranger", 3)
    assert len(top) == 3
    assert all(i.reason == "trending" for i in top)


def test_online_model_moves_item_vectors_and_the_frozen_one_does_not() -> None:
    online, frozen = fitted(True), fitted(False)
    before = online.items.vector("g1").copy() if online.items else None
    for model in (online, frozen):
        for n in range(5):  # readers who pair g1 with space items
            model.observe(click(f"r{n}", "s1", 2000 + n * 10))
            model.observe(click(f"r{n}", "g1", 2001 + n * 10))
    assert before is not None
    assert online.items is not None
    assert frozen.items is not None
    moved = online.items.vector("g1")
    assert moved is not None
    assert not np.allclose(moved, before)
    space = online.items.vector("s1")
    assert space is not None
    assert float(np.dot(moved, space)) > float(np.dot(before, space))
    assert np.allclose(frozen.items.vector("g1"), before)


def test_online_model_learns_sequential_rules_and_the_frozen_one_does_not() -> None:
    online, frozen = fitted(True), fitted(False)
    for model in (online, frozen):
        assert model.items.transitions is not None
        assert "g1" not in model.items.transitions.rules.get("s6", {})
        model.observe(click("r", "s6", 2000))
        model.observe(click("r", "g1", 2001))
    assert online.items.transitions is not None
    assert frozen.items.transitions is not None
    assert online.items.transitions.rules["s6"]["g1"] == 1.0
    assert "g1" not in frozen.items.transitions.rules.get("s6", {})
    # and the next reader of s6 gets g1 among the candidates at once
    online.observe(click("next", "s6", 3000))
    assert "g1" in online.candidates("next")


def test_pool_recall_is_reported_for_eddy_only() -> None:
    cfg = EvalConfig(
        protocol="holdout-user",
        ks=(3,),
        fraction=0.34,
        models=("popularity", "eddy"),
        engine=CONFIG,
    )
    results = evaluate(groups_dataset(), cfg)
    assert "pool_recall" not in results["popularity"]
    assert 0.5 < results["eddy"]["pool_recall"] <= 1.0


def groups_dataset() -> Dataset:
    return Dataset("groups", ITEMS, history(60), 0, {})


def test_evaluate_scores_every_model_and_eddy_beats_random() -> None:
    cfg = EvalConfig(protocol="holdout-user", ks=(3,), fraction=0.34, engine=CONFIG)
    results = evaluate(groups_dataset(), cfg)
    assert list(results) == list(MODELS)
    for metrics in results.values():
        for key in ("hr@3", "precision@3", "recall@3", "ndcg@3", "map@3", "mrr@3"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["users"] == 60
    for metrics in results.values():  # every model measured in the same vector space
        assert 0.0 <= metrics["diversity@3"] <= 1.0
    assert results["eddy"]["ndcg@3"] > results["random"]["ndcg@3"]
    assert results["eddy"]["ndcg@3"] > 0.5  # the held-out items are in the user's group


def test_prequential_and_progress() -> None:
    ticks: list[tuple[str, int, int]] = []
    cfg = EvalConfig(
        protocol="prequential", ks=(3,), fraction=0.25, models=("popularity", "eddy"), engine=CONFIG
    )
    results = evaluate(groups_dataset(), cfg, progress=lambda *t: ticks.append(t))
    assert results["eddy"]["events"] + results["eddy"]["repeats"] == 90
    assert ticks[-1] == ("eddy", 360, 360)
    assert results["eddy"]["hr@3"] > results["popularity"]["hr@3"]


def test_greedy_replay_estimates_equal_the_truth() -> None:
    cfg = EvalConfig(ks=(3,), fraction=0.25, engine=CONFIG)
    greedy = bandit_replay(groups_dataset(), cfg, epsilon=0.0)
    assert greedy["explored_share"] == 0.0
    # logging = target: every weight is 1, so IPS and SNIPS are the measured top-slot CTR
    assert greedy["ips_greedy_ctr@1"] == pytest.approx(greedy["greedy_ctr@1"])
    assert greedy["snips_greedy_ctr@1"] == pytest.approx(greedy["ctr@1"])
    explore = bandit_replay(groups_dataset(), cfg, epsilon=1.0)
    free = 3 - DEFAULT_PROTECTED_SLOTS  # of 3 slots, the first ones never explore
    assert explore["explored_share"] == pytest.approx(free / 3)
    assert explore["events"] == greedy["events"]


def test_eval_config_is_checked() -> None:
    with pytest.raises(ValueError, match="protocol"):
        EvalConfig(protocol="kfold")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="models"):
        EvalConfig(models=("svd",))
    with pytest.raises(ValueError, match="fraction"):
        EvalConfig(fraction=1.0)


def test_cli_evaluates_a_rated_csv_and_writes_json(tmp_path: Path) -> None:
    rows = ["user,item,rating,when"]
    for e in history(30):
        rows.append(f"{e.user_id},{e.item_id},{4.5 if e.item_id.endswith('1') else 3.0},{e.ts}")
    data = tmp_path / "ratings.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "results.json"
    args = ["evaluate", str(data), "--user-col", "user", "--item-col", "item"]
    args += ["--time-col", "when", "--rating-col", "rating", "--purchase-at", "4"]
    args += ["--models", "random,popularity,itemknn", "--k", "3", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["config"]["protocol"] == "holdout-user"
    assert set(doc["results"]) == {"random", "popularity", "itemknn"}
    assert doc["results"]["itemknn"]["users"] == 30
    assert "hr@3" in result.output


def test_cli_rejects_an_unknown_protocol(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--protocol", "kfold"])
    assert result.exit_code == 1
    assert "unknown protocol" in result.output
