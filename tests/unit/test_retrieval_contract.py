"""One contract for every ``Retriever``: exact numpy search and FAISS (IVF path forced)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.retrieval import (
    ExactRetriever,
    FaissConfig,
    FaissRetriever,
    Retriever,
    load_npz,
    save_npz,
)
from models.synthetic import clustered_vectors, queries_near

DIM = 32
# exact_below=1 forces the approximate IVF path from the first item; nlist/nprobe make
# it genuinely approximate (8 of 32 lists scanned) on the few thousand items used here.
IVF = FaissConfig(exact_below=1, nlist=32, nprobe=8, threads=1, seed=7)

Factory = Callable[[int], Retriever]


def _exact(dim: int) -> Retriever:
    return ExactRetriever(dim)


def _faiss_ivf(dim: int) -> Retriever:
    return FaissRetriever(dim, IVF)


def _faiss_small(dim: int) -> Retriever:
    return FaissRetriever(dim, FaissConfig(exact_below=10_000))


@pytest.fixture(
    scope="module",
    params=[_exact, _faiss_ivf, _faiss_small],
    ids=["exact", "faiss-ivf", "faiss-below-exact_below"],
)
def make(request: pytest.FixtureRequest) -> Factory:
    """A factory for an empty retriever of the implementation under test."""
    factory: Factory = request.param
    return factory


def _filled(make: Factory, vectors: np.ndarray, chunk: int = 0) -> tuple[Retriever, list[str]]:
    r = make(vectors.shape[1])
    ids = [f"item-{i}" for i in range(len(vectors))]
    step = chunk or len(vectors) or 1
    for start in range(0, len(vectors), step):
        r.upsert(ids[start : start + step], vectors[start : start + step])
    return r, ids


def _unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def catalogue() -> np.ndarray:
    return clustered_vectors(3000, DIM, n_clusters=40, seed=1, spread=0.8)


def test_recall_at_100_against_exact(make: Factory, catalogue: np.ndarray) -> None:
    # Filled in chunks so the FAISS index retrains on growth and then takes plain adds.
    r, ids = _filled(make, catalogue, chunk=500)
    truth = ExactRetriever.from_arrays(ids, catalogue)
    queries = queries_near(catalogue, 100, seed=2)
    if isinstance(r, FaissRetriever) and r.config is IVF:
        assert r.approximate
        assert r.nlist == 32
    recalls = []
    for q, got in zip(queries, r.search_batch(queries, 100), strict=True):
        want = {i for i, _ in truth.search(q, 100)}
        single = r.search(q, 100)
        assert len(got) == len(single) == 100
        assert len(want & {i for i, _ in single}) / 100 >= 0.7
        recalls.append(len(want & {i for i, _ in got}) / 100)
    assert float(np.mean(recalls)) >= 0.95


def test_excluded_never_returned_and_k_still_filled(make: Factory, catalogue: np.ndarray) -> None:
    r, ids = _filled(make, catalogue)
    q = queries_near(catalogue, 1, seed=3)[0]
    top = [i for i, _ in r.search(q, 60)]
    for excluded in (top[:1], top, set(top), ids[:2000] + top):  # small, many (> overfetch)
        hits = r.search(q, 20, exclude=excluded)
        assert len(hits) == 20
        assert not {i for i, _ in hits} & set(excluded)
    survivors = ids[-5:]
    hits = r.search(q, 10, exclude=ids[:-5])  # the probed lists cannot fill k
    assert sorted(i for i, _ in hits) == sorted(survivors)
    assert r.search(q, 10, exclude=ids) == []


def test_batch_exclusions_apply_per_query(make: Factory, catalogue: np.ndarray) -> None:
    r, ids = _filled(make, catalogue)
    qs = queries_near(catalogue, 3, seed=4)
    excludes = [[i for i, _ in r.search(q, 30)] for q in qs]
    excludes[2] = ids[:2500]
    out = r.search_batch(qs, 25, exclude=excludes)
    for hits, excluded in zip(out, excludes, strict=True):
        assert len(hits) == 25
        assert not {i for i, _ in hits} & set(excluded)
    with pytest.raises(ValueError, match="exclude has 1 entries for 3 queries"):
        r.search_batch(qs, 5, exclude=[()])


def test_removed_ids_never_returned(make: Factory, catalogue: np.ndarray) -> None:
    r, ids = _filled(make, catalogue)
    q = queries_near(catalogue, 1, seed=5)[0]
    gone = [i for i, _ in r.search(q, 10)]
    r.remove([*gone, "never-added"])
    assert len(r) == len(ids) - 10
    assert all(r.vector(i) is None for i in gone)
    assert not set(gone) & set(r.ids())
    assert not {i for i, _ in r.search(q, 100)} & set(gone)
    for hits in r.search_batch(np.stack([q, q]), 100):
        assert not {i for i, _ in hits} & set(gone)
    r.remove(gone)  # idempotent
    assert len(r) == len(ids) - 10


def test_upsert_is_visible_in_next_query(make: Factory, catalogue: np.ndarray) -> None:
    r, ids = _filled(make, catalogue)
    q = queries_near(catalogue, 1, seed=6)[0]
    old_best = r.search(q, 1)[0][0]
    mover = next(i for i in reversed(ids) if i != old_best)
    r.upsert([mover, old_best], np.stack([q, -q]))  # onto the query / to its antipode
    hits = r.search(q, 50)
    assert hits[0][0] == mover
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert old_best not in {i for i, _ in hits}
    assert r.search(-q, 1)[0][0] == old_best
    np.testing.assert_allclose(r.vector(mover), q, rtol=1e-6)
    assert len(r) == len(ids)


def test_new_ids_searchable_immediately(make: Factory, catalogue: np.ndarray) -> None:
    r, ids = _filled(make, catalogue)
    rng = np.random.default_rng(8)
    for n in range(3):
        q = _unit(rng)
        r.upsert([f"new-{n}"], q[None, :])
        assert r.search(q, 3)[0] == (f"new-{n}", pytest.approx(1.0, abs=1e-5))
    assert len(r) == len(ids) + 3


def test_empty_index_returns_nothing(make: Factory) -> None:
    r = make(DIM)
    q = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    assert len(r) == 0
    assert r.search(q, 10) == []
    assert r.search_batch(np.stack([q, q]), 10) == [[], []]
    assert r.ids() == []
    r.upsert(["a"], q[None, :])
    r.remove(["a"])
    assert r.search(q, 10) == []
    r.upsert([], np.empty((0, DIM), dtype=np.float32))
    assert len(r) == 0
    assert r.search(q, 0) == []


def test_k_larger_than_catalogue(make: Factory) -> None:
    vectors = clustered_vectors(5, DIM, n_clusters=2, seed=9)
    r, ids = _filled(make, vectors)
    hits = r.search(vectors[0], 100)
    assert sorted(i for i, _ in hits) == sorted(ids)
    assert hits[0][0] == "item-0"
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert len(r.search(vectors[0], 100, exclude=["item-1"])) == 4


def test_duplicate_ids_in_one_upsert_last_wins(make: Factory) -> None:
    rng = np.random.default_rng(10)
    a, b, c = _unit(rng), _unit(rng), _unit(rng)
    r = make(DIM)
    r.upsert(["x", "y", "x"], np.stack([a, b, c]))
    assert len(r) == 2
    assert sorted(r.ids()) == ["x", "y"]
    np.testing.assert_array_equal(r.vector("x"), c)
    hits = r.search(c, 5)
    assert [i for i, _ in hits].count("x") == 1
    assert hits[0] == ("x", pytest.approx(1.0, abs=1e-5))


def _reload(r: Retriever, path: Path) -> Retriever:
    ids, vectors = load_npz(path)
    if isinstance(r, FaissRetriever):
        return FaissRetriever.from_arrays(ids, vectors, r.config)
    return ExactRetriever.from_arrays(ids, vectors)


def test_save_load_round_trip(make: Factory, catalogue: np.ndarray, tmp_path: Path) -> None:
    r, ids = _filled(make, catalogue)
    qs = queries_near(catalogue, 20, seed=11)
    path = tmp_path / "items.npz"
    save_npz(path, r)
    with np.load(path, allow_pickle=False) as raw:
        assert raw["ids"].dtype.kind == "U"
        assert raw["vectors"].dtype == np.float32
    loaded = _reload(r, path)
    assert sorted(loaded.ids()) == sorted(ids)
    np.testing.assert_array_equal(loaded.vector("item-42"), catalogue[42])
    assert loaded.search_batch(qs, 10) == r.search_batch(qs, 10)

    # After online changes the round trip keeps exactly the live items and vectors.
    r.remove(ids[:100])
    r.upsert(["item-500", "fresh"], qs[:2])
    save_npz(path, r)
    again = _reload(r, path)
    assert sorted(again.ids()) == sorted(r.ids())
    np.testing.assert_array_equal(again.vector("item-500"), qs[0])
    assert again.search(qs[1], 1)[0][0] == "fresh"


def test_same_arrays_same_results(make: Factory, catalogue: np.ndarray) -> None:
    qs = queries_near(catalogue, 10, seed=12)
    a, _ = _filled(make, catalogue)
    b, _ = _filled(make, catalogue)
    assert a.search_batch(qs, 20) == b.search_batch(qs, 20)


def test_dimension_mismatch_is_a_clear_error(make: Factory) -> None:
    r = make(DIM)
    r.upsert(["a"], np.ones((1, DIM), dtype=np.float32) / np.sqrt(DIM))
    with pytest.raises(ValueError, match=f"dimension 16, this retriever holds dimension {DIM}"):
        r.upsert(["b"], np.ones((1, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="query has dimension 16"):
        r.search(np.ones(16, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="query has dimension 16"):
        r.search_batch(np.ones((2, 16), dtype=np.float32), 3)
    with pytest.raises(ValueError, match="got 2 ids but 1 vectors"):
        r.upsert(["b", "c"], np.ones((1, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        r.upsert(["b"], np.full((1, DIM), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        r.search(np.ones(DIM, dtype=np.float32), -1)
    assert r.ids() == ["a"]


def test_faiss_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="nprobe >= 1"):
        FaissConfig(nprobe=0)
    with pytest.raises(ValueError, match="retrain_growth"):
        FaissConfig(retrain_growth=0.5)


_ids = st.sampled_from([f"id{i}" for i in range(12)])


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.lists(_ids, min_size=1, max_size=5)), min_size=1, max_size=12
    ),
    seed=st.integers(0, 2**16),
    k=st.integers(0, 15),
    exclude=st.sets(_ids, max_size=6),
)
def test_property_matches_a_dict_model(
    make: Factory, ops: list[tuple[bool, list[str]]], seed: int, k: int, exclude: set[str]
) -> None:
    """Any upsert/remove sequence: state equals a dict; results are sorted, unique, legal."""
    rng = np.random.default_rng(seed)
    r, model = make(8), dict[str, np.ndarray]()
    for is_upsert, batch in ops:
        if is_upsert:
            vecs = rng.standard_normal((len(batch), 8)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            r.upsert(batch, vecs)
            model.update(zip(batch, vecs, strict=True))
        else:
            r.remove(batch)
            for i in batch:
                model.pop(i, None)
    assert len(r) == len(model)
    assert sorted(r.ids()) == sorted(model)
    for i, v in model.items():
        np.testing.assert_array_equal(r.vector(i), v)
    q = rng.standard_normal(8).astype(np.float32)
    hits = r.search(q, k, exclude=exclude)
    got = [i for i, _ in hits]
    assert len(got) == len(set(got)) == min(k, len(set(model) - exclude))
    assert not set(got) & exclude
    assert set(got) <= set(model)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    # Tiny catalogues are searched exhaustively, so the scores are the exact top-k.
    want = sorted((float(v @ q) for i, v in model.items() if i not in exclude), reverse=True)
    np.testing.assert_allclose(scores, want[:k], rtol=1e-5, atol=1e-6)
    assert r.search_batch(q[None, :], k, exclude=[exclude]) == [hits]
