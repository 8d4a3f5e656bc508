"""Baseline registration in ``eddy evaluate`` and the validation grid search."""

from __future__ import annotations

import random

import pytest

from models.baselines import ItemKNNRecommender, Recommender
from models.datasets import Dataset
from models.ease import EASERecommender
from models.evaluation import MODELS, EvalConfig, TimedFit, evaluate, make_model
from models.events import Event, EventType
from models.sequential_rules import SequentialRulesRecommender
from models.sessionknn import VSKNNRecommender
from models.tuning import Validation, grid_search

T0 = 1_700_000_000.0


def ev(user: str, item: str, ts: float) -> Event:
    return Event(type=EventType.CLICK, user_id=user, item_id=item, ts=T0 + ts)


def grouped_events(n_users: int = 20, per_user: int = 8) -> list[Event]:
    """Users in two groups, each clicking items of its own group."""
    rng = random.Random(1)
    events = []
    for n in range(n_users * per_user):
        user = n % n_users
        item = rng.randrange(6) + (6 if user % 2 else 0)
        events.append(ev(f"u{user:02d}", f"i{item:02d}", n))
    return events


def test_every_baseline_is_registered() -> None:
    dataset = Dataset("tiny", [], grouped_events(), 0, {})
    cfg = EvalConfig()
    kinds = {
        "itemknn": ItemKNNRecommender,
        "itemknn-session": ItemKNNRecommender,
        "ease": EASERecommender,
        "vsknn": VSKNNRecommender,
        "sr": SequentialRulesRecommender,
    }
    for name, kind in kinds.items():
        assert name in MODELS
        assert isinstance(make_model(name, dataset, cfg), kind)
    session = make_model("itemknn-session", dataset, cfg)
    assert isinstance(session, ItemKNNRecommender)
    assert session.history_half_life is not None


def test_results_carry_fit_time_and_tuned_parameters() -> None:
    dataset = Dataset("tiny", [], grouped_events(), 0, {})
    cfg = EvalConfig(protocol="holdout-user", ks=(3,), models=("popularity", "ease", "sr"))
    results = evaluate(dataset, cfg)
    for metrics in results.values():
        assert metrics["fit_seconds"] >= 0.0
    assert results["ease"]["tuned_l2"] in EASERecommender().grid
    assert "tuned_l2" not in results["sr"]


def test_timed_fit_delegates() -> None:
    inner = SequentialRulesRecommender()
    timed: Recommender = TimedFit(inner)
    timed.fit(grouped_events())
    timed.observe(ev("u00", "i00", 1_000))
    assert timed.recommend("u00", 3) == inner.recommend("u00", 3)
    assert timed.name == "sr"


def test_grid_search_is_best_first() -> None:
    events = grouped_events()
    validation = Validation("movielens", events[:120], events[120:])
    rows = grid_search("itemknn", validation, {"k_neighbours": [1, 5], "shrink": [0.0, 50.0]})
    assert [set(p) for p, _ in rows] == [{"k_neighbours", "shrink"}] * 4
    scores = [r["ndcg@10"] for _, r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(r["fit_seconds"] >= 0.0 for _, r in rows)
    sessions = Validation("yoochoose", events[:120], events[120:])
    rows = grid_search("sr", sessions, {"steps": [1, 3]})
    assert {"mrr@20", "hr@20"} <= set(rows[0][1])
    with pytest.raises(KeyError):
        grid_search("nope", sessions, {})
