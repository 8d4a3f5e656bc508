"""Content model: tokens, TF-IDF consistency with scikit-learn, the projection into the
collaborative space, persistence and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]

from models.content import ContentModel, item_tokens
from models.events import ItemUpsert

DIM = 4
AXIS_A = np.array([1.0, 0.0, 0.0, 0.0])
AXIS_B = np.array([0.0, 1.0, 0.0, 0.0])


def item(
    item_id: str, title: str, cats: tuple[str, ...] = (), tags: tuple[str, ...] = ()
) -> ItemUpsert:
    return ItemUpsert(item_id=item_id, title=title, categories=cats, tags=tags)


def catalogue() -> tuple[list[ItemUpsert], list[str], np.ndarray]:
    """Space items sit near axis A and Garden items near axis B, with per-item noise."""
    rng = np.random.default_rng(0)
    items, vectors = [], []
    for i in range(12):
        items.append(item(f"a{i}", f"Rocket voyage {i}", ("Space",), ("stars",)))
        vectors.append(AXIS_A + 0.3 * rng.standard_normal(DIM))
        items.append(item(f"b{i}", f"Rose garden {i}", ("Garden",), ("flowers",)))
        vectors.append(AXIS_B + 0.3 * rng.standard_normal(DIM))
    return items, [i.item_id for i in items], np.array(vectors)


@pytest.fixture(scope="module")
def model() -> ContentModel:
    items, ids, vectors = catalogue()
    return ContentModel.fit(items, ids, vectors, alpha=0.5)


def test_tokens_cover_title_decade_categories_and_tags() -> None:
    tokens = item_tokens(item("1", "Toy Story 2 (1999)", ("Animation", "Children"), ("pixar",)))
    assert tokens == ["w:toy", "w:story", "d:1990", "c:animation", "c:children", "t:pixar"]
    assert item_tokens(item("2", "")) == []


def test_features_match_scikit_learns_tfidf(model: ContentModel) -> None:
    items, _ids, _vectors = catalogue()
    docs = [item_tokens(i) for i in items]
    reference = TfidfVectorizer(analyzer=lambda d: d, min_df=2, sublinear_tf=True).fit(docs)
    assert list(reference.get_feature_names_out()) == list(model.vocabulary)
    np.testing.assert_allclose(
        model.features(items).toarray(), reference.transform(docs).toarray(), atol=1e-6
    )


def test_new_item_lands_near_its_kind(model: ContentModel) -> None:
    rocket, rose = model.embed(
        [
            item("new-a", "Rocket to the moon", ("Space",)),
            item("new-b", "Garden of roses", ("Garden",), ("flowers",)),
        ]
    )
    assert rocket @ AXIS_A > 0.8
    assert rocket @ AXIS_A > rocket @ AXIS_B + 0.5
    assert rose @ AXIS_B > 0.8
    assert rose @ AXIS_B > rose @ AXIS_A + 0.5


def test_embed_is_unit_float32_and_unknown_tokens_get_the_bias_direction(
    model: ContentModel,
) -> None:
    out = model.embed([item("x", "Zzz qqq", ("Unknown",)), item("y", "")])
    assert out.dtype == np.float32
    assert out.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    bias = model.bias / np.linalg.norm(model.bias)
    np.testing.assert_allclose(out[0], bias, atol=1e-6)
    np.testing.assert_allclose(out[1], bias, atol=1e-6)
    assert model.embed([]).shape == (0, DIM)


def test_round_trip_through_arrays_and_json(model: ContentModel) -> None:
    meta = json.loads(json.dumps(model.to_json()))
    again = ContentModel.from_arrays(model.to_arrays(), meta)
    items, _ids, _vectors = catalogue()
    assert again.vocabulary == model.vocabulary
    assert np.array_equal(again.embed(items), model.embed(items))


def test_fit_is_deterministic() -> None:
    items, ids, vectors = catalogue()
    first = ContentModel.fit(items, ids, vectors, alpha=0.5)
    second = ContentModel.fit(items, ids, vectors, alpha=0.5)
    assert np.array_equal(first.weights, second.weights)
    assert np.array_equal(first.bias, second.bias)


def test_stronger_ridge_shrinks_toward_the_mean() -> None:
    items, ids, vectors = catalogue()
    weak = ContentModel.fit(items, ids, vectors, alpha=0.1)
    strong = ContentModel.fit(items, ids, vectors, alpha=100.0)
    assert np.linalg.norm(strong.weights) < np.linalg.norm(weak.weights)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"item_ids": ["a", "b"]}, "one id and one vector per item"),
        ({"item_vectors": np.zeros((3, DIM))}, "one id and one vector per item"),
        ({"alpha": 0.0}, "alpha"),
        ({"item_vectors": np.full((24, DIM), np.nan)}, "NaN"),
    ],
)
def test_fit_rejects_bad_input(change: dict[str, object], message: str) -> None:
    items, ids, vectors = catalogue()
    args: dict[str, object] = {"items": items, "item_ids": ids, "item_vectors": vectors}
    args |= change
    with pytest.raises(ValueError, match=message):
        ContentModel.fit(**args)  # type: ignore[arg-type]


def test_fit_rejects_repeated_ids_and_empty_metadata() -> None:
    items, _ids, vectors = catalogue()
    with pytest.raises(ValueError, match="unique"):
        ContentModel.fit(items, ["same"] * len(items), vectors)
    blank = [item(str(i), "") for i in range(3)]
    with pytest.raises(ValueError, match="nothing to learn"):
        ContentModel.fit(blank, ["0", "1", "2"], np.eye(3))


def test_from_arrays_rejects_inconsistent_parts(model: ContentModel) -> None:
    arrays = dict(model.to_arrays())
    with pytest.raises(ValueError, match="format"):
        ContentModel.from_arrays(arrays, {"format": "other"})
    with pytest.raises(ValueError, match="missing"):
        ContentModel.from_arrays({"idf": model.idf}, model.to_json())
    arrays["weights"] = model.weights[:-1]
    with pytest.raises(ValueError, match="shapes disagree"):
        ContentModel.from_arrays(arrays, model.to_json())
