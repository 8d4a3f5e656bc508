"""Model artefact: save/load round trip, LATEST, validation with clear errors, no pickle."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.artefact import ArtefactError, ModelArtefact, latest, load, save
from models.training import TrainConfig, train
from tests.unit.test_training import T0, two_group_dataset


@pytest.fixture(scope="module")
def artefact() -> ModelArtefact:
    return train(two_group_dataset(), TrainConfig(dim=8, iterations=5), created_at=T0)


def small(version: str = "cf-000000000001", **changes: object) -> ModelArtefact:
    vectors = np.eye(3, 4, dtype=np.float32)
    fields: dict[str, object] = {
        "version": version,
        "created_at": T0,
        "dataset": "tiny",
        "config": {"dim": 4},
        "item_ids": ["a", "b", "c"],
        "item_vectors": vectors,
        "item_from_content": np.array([False, False, True]),
        "popularity": {"a": (2.0, T0)},
        "item_categories": {"a": ["X"]},
        "content": None,
        "metrics": {"n": 1},
    }
    fields |= changes
    return ModelArtefact(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_everything(artefact: ModelArtefact, tmp_path: Path) -> None:
    path = save(artefact, tmp_path / "models")
    assert path == tmp_path / "models" / f"{artefact.version}.json"
    assert (tmp_path / "models" / f"{artefact.version}.npz").is_file()
    back = load(tmp_path / "models")
    assert back.version == artefact.version
    assert back.created_at == artefact.created_at
    assert back.dataset == artefact.dataset
    assert back.config == artefact.config
    assert back.item_ids == artefact.item_ids
    assert back.item_vectors.dtype == np.float32
    assert np.array_equal(back.item_vectors, artefact.item_vectors)
    assert np.array_equal(back.item_from_content, artefact.item_from_content)
    assert back.popularity == artefact.popularity
    assert back.item_categories == artefact.item_categories
    assert back.metrics == artefact.metrics
    assert artefact.item_item is not None
    assert back.item_item is not None
    assert back.item_item.item_ids == artefact.item_item.item_ids
    assert (back.item_item.weights != artefact.item_item.weights).nnz == 0
    assert artefact.transitions is not None
    assert back.transitions is not None
    assert back.transitions.rules == artefact.transitions.rules
    assert back.content is not None
    assert artefact.content is not None
    assert back.content.vocabulary == artefact.content.vocabulary
    items = two_group_dataset().items[:4]
    assert np.array_equal(back.content.embed(items), artefact.content.embed(items))


def test_load_accepts_the_json_or_the_npz(artefact: ModelArtefact, tmp_path: Path) -> None:
    path = save(artefact, tmp_path)
    assert load(path).version == artefact.version
    assert load(path.with_suffix(".npz")).version == artefact.version


def test_latest_follows_the_newest_save(tmp_path: Path) -> None:
    assert latest(tmp_path) is None
    save(small("cf-aaaaaaaaaaaa"), tmp_path)
    second = save(small("cf-bbbbbbbbbbbb"), tmp_path)
    assert latest(tmp_path) == second
    assert (tmp_path / "LATEST").read_text().strip() == "cf-bbbbbbbbbbbb"
    assert load(tmp_path).version == "cf-bbbbbbbbbbbb"
    assert load(tmp_path / "cf-aaaaaaaaaaaa.json").version == "cf-aaaaaaaaaaaa"
    assert not list(tmp_path.glob("*.tmp"))


def test_files_hold_no_pickle_and_arrays_only_in_npz(tmp_path: Path) -> None:
    path = save(small(), tmp_path)
    with zipfile.ZipFile(path.with_suffix(".npz")) as archive:
        names = sorted(archive.namelist())
        assert names == ["item_from_content.npy", "item_ids.npy", "item_vectors.npy"]
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
        assert data["item_ids"].dtype.kind == "U"
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "eddy-artefact-v1"
    assert manifest["popularity"] == {"a": [2.0, T0]}
    assert "item_vectors" not in manifest


def test_missing_things_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model artefact"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model artefact"):
        load(tmp_path / "nope.json")
    (tmp_path / "LATEST").write_text("cf-missing\n")
    with pytest.raises(ArtefactError, match="is missing"):
        latest(tmp_path)
    path = save(small(), tmp_path / "ok")
    path.with_suffix(".npz").unlink()
    with pytest.raises(ArtefactError, match=r"arrays file .* is missing"):
        load(path)


def test_corrupt_or_swapped_arrays_are_refused(tmp_path: Path) -> None:
    path = save(small(), tmp_path)
    other = save(small("cf-000000000002", item_vectors=np.eye(3, 4, 1, dtype=np.float32)), tmp_path)
    path.with_suffix(".npz").write_bytes(other.with_suffix(".npz").read_bytes())
    with pytest.raises(ArtefactError, match="checksum"):
        load(path)


def test_manifest_that_disagrees_with_the_arrays(tmp_path: Path) -> None:
    path = save(small(), tmp_path)
    manifest = json.loads(path.read_text())
    manifest["dim"] = 8
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match="dimension 8"):
        load(path)
    manifest |= {"dim": 4, "format": "something-else"}
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match="not an Eddy artefact"):
        load(path)
    path.write_text("{not json")
    with pytest.raises(ArtefactError, match="not a JSON manifest"):
        load(path)


def test_object_arrays_are_not_unpickled(tmp_path: Path) -> None:
    path = save(small(), tmp_path)
    evil: dict[str, Any] = {
        "item_ids": np.array(["a", "b", "c"], dtype=object),
        "item_vectors": np.eye(3, 4),
    }
    with path.with_suffix(".npz").open("wb") as handle:
        np.savez(handle, **evil)
    manifest = json.loads(path.read_text())
    manifest.pop("arrays_sha256")
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match="without pickle"):
        load(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"item_ids": ["a", "b"]}, "2 item ids but 3 item vectors"),
        ({"item_ids": ["a", "b", "a"]}, r"not unique: \['a'\]"),
        ({"item_vectors": np.eye(3, 4)}, "float32"),
        ({"item_vectors": 2 * np.eye(3, 4, dtype=np.float32)}, "L2-normalised"),
        ({"item_vectors": np.full((3, 4), np.nan, dtype=np.float32)}, "NaN"),
        ({"version": "../evil"}, "safe name"),
        ({"item_from_content": np.array([0, 1, 0])}, "item_from_content must be a bool"),
        ({"popularity": {"a": (1.0, float("inf"))}}, "finite"),
    ],
)
def test_validation_names_the_problem(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ArtefactError, match=message):
        small(**changes)


def test_content_dimension_must_match(artefact: ModelArtefact) -> None:
    narrow = np.zeros((len(artefact), 4), dtype=np.float32)
    narrow[:, 0] = 1.0
    with pytest.raises(ArtefactError, match="content model has dimension 8"):
        replace(artefact, item_vectors=narrow)


def test_vectors_are_read_only(artefact: ModelArtefact) -> None:
    with pytest.raises(ValueError, match="read-only"):
        artefact.item_vectors[0, 0] = 1.0
