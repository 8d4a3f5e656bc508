"""Pre-training: a two-group world whose right answer is known, determinism, the
interaction matrix, popularity, and the evaluation harness."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest

from models.artefact import load, save
from models.datasets import Dataset
from models.events import Event, EventType, ItemUpsert
from models.itemitem import fit_item_item
from models.popularity import bump
from models.training import (
    PROFILE_HISTORY,
    Query,
    TrainConfig,
    cooccurrence,
    interactions,
    list_metrics,
    model_version,
    popularity_entries,
    rank_lists,
    session_queries,
    split_per_user,
    train,
    user_queries,
)

T0 = 1_600_000_000.0
WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
GROUPS = {"A": ("alpha", "Space"), "B": ("bravo", "Garden")}
SMALL = TrainConfig(dim=8, iterations=10)


def ev(user: str, item: str, ts: float, kind: EventType = EventType.CLICK, qty: int = 1) -> Event:
    return Event(type=kind, user_id=user, item_id=item, ts=ts, quantity=qty)


def two_group_dataset(n_items: int = 10, n_users: int = 24, seed: int = 7) -> Dataset:
    """Users of group A only touch A items (titled "alpha ...", category Space), B users
    only B items ("bravo ...", Garden); plus a catalogue item per group with no events."""
    rng = random.Random(seed)
    items, events = [], []
    for group, (word, category) in GROUPS.items():
        ids = [f"{group}{i}" for i in range(n_items)]
        for i, item_id in enumerate([*ids, f"{group}-new"]):
            items.append(
                ItemUpsert(
                    item_id=item_id,
                    title=f"{word} thing {i} (1999)",
                    categories=(category,),
                    tags=(f"{word}-tag",),
                )
            )
        for u in range(n_users // 2):
            for j, item_id in enumerate(rng.sample(ids, 5)):
                kind = EventType.PURCHASE if j == 0 else EventType.CLICK
                events.append(ev(f"{group}-u{u}", item_id, T0 + 3600 * (u * 7 + j), kind))
    events.sort(key=lambda e: (e.ts, e.user_id, e.item_id))
    return Dataset("two-groups", sorted(items, key=lambda i: i.item_id), events, 0, {})


def group_separation(ids: list[str], vectors: np.ndarray) -> tuple[float, float, float]:
    """Mean within-group cosine, mean across-group cosine, share of nearest neighbours in
    the same group."""
    groups = np.array([item_id[0] for item_id in ids])
    sims = vectors @ vectors.T
    same = groups[:, None] == groups[None, :]
    off_diag = ~np.eye(len(ids), dtype=bool)
    np.fill_diagonal(sims, -np.inf)
    nearest_same = float(np.mean(groups[np.argmax(sims, axis=1)] == groups))
    np.fill_diagonal(sims, 1.0)
    return float(sims[same & off_diag].mean()), float(sims[~same].mean()), nearest_same


@pytest.fixture(scope="module")
def world() -> Dataset:
    return two_group_dataset()


# --------------------------------------------------------------------------- known answer


@pytest.mark.parametrize("method", ["als", "sppmi"])
def test_items_of_a_group_end_up_nearer_each_other(world: Dataset, method: str) -> None:
    art = train(world, replace(SMALL, method=method), created_at=T0)  # type: ignore[arg-type]
    cf = [i for i in art.item_ids if "-new" not in i]
    assert len(cf) == 20
    rows = art.row_of()
    vectors = art.item_vectors[[rows[i] for i in cf]]
    within, across, nearest = group_separation(cf, vectors)
    assert within > 0.5 > abs(across) + 0.4
    assert nearest == 1.0
    for row, item_id in enumerate(cf):  # every item: own group nearer than the other
        own = [
            vectors[row] @ vectors[j] for j, o in enumerate(cf) if o[0] == item_id[0] and j != row
        ]
        other = [vectors[row] @ vectors[j] for j, o in enumerate(cf) if o[0] != item_id[0]]
        assert np.mean(own) > np.mean(other) + 0.2
    assert art.dim == 8
    np.testing.assert_allclose(np.linalg.norm(art.item_vectors, axis=1), 1.0, atol=1e-5)


def test_new_catalogue_items_get_content_vectors_near_their_group(world: Dataset) -> None:
    art = train(world, SMALL, created_at=T0)
    rows = art.row_of()
    assert art.content is not None
    assert art.metrics["content_items"] == 2
    assert sorted(i for i, c in zip(art.item_ids, art.item_from_content, strict=True) if c) == [
        "A-new",
        "B-new",
    ]
    for group, other in (("A", "B"), ("B", "A")):
        new = art.item_vectors[rows[f"{group}-new"]]
        own = np.mean([new @ art.item_vectors[rows[f"{group}{i}"]] for i in range(10)])
        far = np.mean([new @ art.item_vectors[rows[f"{other}{i}"]] for i in range(10)])
        assert own > far + 0.3


def test_artefact_carries_popularity_and_categories(world: Dataset) -> None:
    art = train(world, SMALL, created_at=T0)
    assert art.popularity == popularity_entries(world.events, WEIGHTS, 30 * 86_400.0)
    assert art.item_categories["A3"] == ["Space"]
    assert art.dataset == "two-groups"
    assert art.config == SMALL.to_dict()
    assert art.metrics["trained_until"] == world.events[-1].ts
    assert art.metrics["cf_items"] == 20
    assert art.metrics["users"] == 24


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("method", ["als", "sppmi"])
def test_training_twice_gives_identical_artefacts(
    world: Dataset, method: str, tmp_path: object
) -> None:
    config = replace(SMALL, method=method)  # type: ignore[arg-type]
    first, second = (train(world, config, created_at=T0) for _ in range(2))
    assert first.version == second.version
    assert first.version.startswith("cf-")
    assert len(first.version) == 15
    assert first.item_ids == second.item_ids
    assert np.array_equal(first.item_vectors, second.item_vectors)
    assert first.content is not None
    assert second.content is not None
    assert np.array_equal(first.content.weights, second.content.weights)
    assert first.metrics == second.metrics
    out_a, out_b = tmp_path / "a", tmp_path / "b"  # type: ignore[operator]
    assert save(first, out_a).read_bytes() == save(second, out_b).read_bytes()
    reloaded = load(out_a)
    assert np.array_equal(reloaded.item_vectors, first.item_vectors)


def test_version_depends_on_data_and_config(world: Dataset) -> None:
    base = model_version(world, SMALL)
    assert model_version(world, replace(SMALL, seed=1)) != base
    assert model_version(world, replace(SMALL, dim=16)) != base
    fewer = Dataset(world.name, world.items, world.events[:-1], 0, {})
    assert model_version(fewer, SMALL) != base
    assert model_version(world, TrainConfig.from_dict(SMALL.to_dict())) == base


def test_progress_reports_every_stage(world: Dataset) -> None:
    calls: list[tuple[str, float]] = []
    train(world, SMALL, lambda stage, fraction: calls.append((stage, fraction)))
    stages = [stage for stage, _ in calls]
    for stage in ("prepare", "als", "content", "popularity", "done"):
        assert stage in stages
    assert all(0.0 <= f <= 1.0 for _, f in calls)
    assert calls[-1] == ("done", 1.0)


# --------------------------------------------------------------------------- config & data


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "svd", "method"),
        ("dim", 0, "dim"),
        ("half_life_days", 0.0, "half-life"),
        ("regularisation", -1.0, "regularisation"),
        ("content_holdout", 1.0, "content_holdout"),
        ("window", -1, "window"),
        ("event_weights", {"click": float("nan")}, "event weights"),
        ("item_window", -1, "item_window settings: window"),
        ("item_window_weight", float("inf"), "item_window settings: weight"),
        ("item_popularity_exponent", -0.5, "item_window settings: popularity_exponent"),
        ("transition_backward", -1.0, "transition_backward"),
        ("item_gram_window", -1, "item_window settings: windows"),
        ("item_gram_weight", -1.0, "item_window settings: gram_weight"),
        ("item_gram_l2_factor", 0.0, "item_window settings: gram_l2_factor"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_training_passes_the_neighbourhood_to_the_item_item_model(world: Dataset) -> None:
    plain = replace(SMALL, item_window=0, item_popularity_exponent=0.0, item_gram_weight=0.0)
    windowed = replace(plain, item_window=2, item_window_weight=0.3)
    weights = []
    for config in (plain, windowed):
        got = train(world, config).item_item
        want = fit_item_item(
            world.events,
            config.item_neighbours,
            seed=config.seed,
            max_neighbours=config.item_max_neighbours,
            neighbourhood=config.neighbourhood,
        )
        assert got is not None
        assert got.weights.shape == want.weights.shape
        assert (got.weights != want.weights).nnz == 0
        weights.append(got.weights)
    assert (weights[0] != weights[1]).nnz > 0  # the window changed the model


def test_only_long_lived_profiles_fit_ease_with_the_window_counts(world: Dataset) -> None:
    """Sessions (``world``: five items per user) fit plain EASE: a window is most of a
    session, already in ``X^T X``. Long-lived profiles get ``config.neighbourhood``."""
    rng = random.Random(3)
    items = [f"i{j}" for j in range(30)]
    profiles = [
        ev(f"u{u}", item, T0 + 100 * u + n)
        for u in range(8)
        for n, item in enumerate(rng.sample(items, PROFILE_HISTORY + 2))
    ]
    long_lived = Dataset("profiles", [], profiles, 0, {})
    assert SMALL.neighbourhood.in_gram
    for data, gram in ((long_lived, True), (world, False)):
        art = train(data, SMALL)
        hood = SMALL.neighbourhood if gram else replace(SMALL.neighbourhood, gram_weight=0.0)
        want = fit_item_item(
            data.events,
            SMALL.item_neighbours,
            seed=SMALL.seed,
            max_neighbours=SMALL.item_max_neighbours,
            neighbourhood=hood,
        )
        assert art.item_item is not None
        assert art.metrics["item_item_gram"] is gram
        assert art.item_item.l2 == want.l2
        assert (art.item_item.weights != want.weights).nnz == 0
        assert (art.rank_blend != {}) is gram  # the same test picks the blend


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(method="sppmi", window=3, event_weights={"click": 1.0})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"dims": 3})


def test_interactions_sum_weights_and_drop_rare_items() -> None:
    events = [
        ev("u1", "a", T0, EventType.PURCHASE, qty=2),
        ev("u1", "b", T0 + 1),
        ev("u1", "a", T0 + 2, EventType.VIEW),
        ev("u2", "b", T0 + 3),
        ev("u2", "rare", T0 + 4),
    ]
    data = interactions(events, WEIGHTS, min_item_count=2)
    assert data.item_ids == ["a", "b"]
    assert data.user_ids == ["u1", "u2"]
    assert data.matrix.toarray().tolist() == [[17.0, 2.0], [0.0, 2.0]]  # 8*2 + 1, 2; 2
    assert [h.tolist() for h in data.histories] == [[0, 1, 0], [1]]
    assert data.counts == {"a": 2, "b": 2, "rare": 1}


def test_windowed_cooccurrence_by_hand() -> None:
    events = [ev("u", item, T0 + i) for i, item in enumerate("abcab")]
    data = interactions(events, WEIGHTS, min_item_count=1)
    one = cooccurrence(data, window=1).toarray()  # pairs ab, bc, ca, ab
    assert one.tolist() == [[0, 2, 1], [2, 0, 1], [1, 1, 0]]
    whole = cooccurrence(data, window=0).toarray()  # one user saw a, b, c
    assert whole.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]


def test_popularity_entries_match_bump() -> None:
    events = [ev("u", "a", T0), ev("v", "a", T0 + 86_400, EventType.PURCHASE)]
    expected = bump(bump(None, 2.0, T0, 1e6), 8.0, T0 + 86_400, 1e6)
    assert popularity_entries(events, WEIGHTS, 1e6) == {"a": expected}


def test_training_without_signal_is_a_clear_error() -> None:
    lonely = Dataset("lonely", [], [ev("u", "a", T0)], 0, {})
    with pytest.raises(ValueError, match="fewer than 2 items"):
        train(lonely, SMALL)


def test_dataset_without_catalogue_trains_without_content_model() -> None:
    world = two_group_dataset()
    bare = Dataset("clicks", [], world.events, 0, {})
    art = train(bare, SMALL, created_at=T0)
    assert art.content is None
    assert len(art) == 20
    assert "content_items" not in art.metrics


# --------------------------------------------------------------------------- harness


def test_list_metrics_by_hand() -> None:
    queries = [
        Query([], frozenset(), frozenset({"x"})),
        Query([], frozenset(), frozenset({"y", "z"})),
        Query([], frozenset(), frozenset({"w"})),
    ]
    lists = [["a", "x"], ["y", "b", "z"], ["a", "b"]]
    m = list_metrics(queries, lists, k=3)
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["MRR@3"] == pytest.approx((1 / 2 + 1) / 3)
    ndcg_1 = (1 / np.log2(3)) / 1.0
    ndcg_2 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert m["NDCG@3"] == pytest.approx((ndcg_1 + ndcg_2) / 3)


def test_user_and_session_queries() -> None:
    train_events = [ev("u", "a", T0), ev("v", "b", T0)]
    test_events = [ev("u", "a", T0 + 1), ev("u", "c", T0 + 2), ev("w", "d", T0 + 3)]
    (query,) = user_queries(train_events, test_events)  # w has no history, u saw "a"
    assert query.relevant == {"c"}
    assert query.exclude == {"a"}
    clicks = [
        Event(type=EventType.CLICK, user_id="s1", item_id=i, ts=T0 + n, session_id="s1")
        for n, i in enumerate("pqr")
    ]
    cases = session_queries(clicks)
    assert [([e.item_id for e in c.history], set(c.relevant)) for c in cases] == [
        (["p"], {"q"}),
        (["p", "q"], {"r"}),
    ]


def test_rank_lists_use_vectors_and_fall_back_to_popularity() -> None:
    ids = ["a", "b", "c"]
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    queries = [
        Query([ev("u", "a", T0)], frozenset({"a"}), frozenset({"b"})),
        Query([ev("u", "zzz", T0)], frozenset(), frozenset({"c"})),
    ]
    lists, fallbacks = rank_lists(queries, ids, vectors, ["c", "a"], WEIGHTS, 1e6, k=2)
    assert lists == [["b", "c"], ["c", "a"]]
    assert fallbacks == 1


def test_split_per_user_holds_out_each_users_last_events() -> None:
    events = [ev("u", str(i), T0 + i) for i in range(10)] + [ev("solo", "x", T0)]
    train_part, test_part = split_per_user(events, 0.2)
    assert [e.item_id for e in test_part] == ["8", "9"]
    assert len(train_part) == 9
