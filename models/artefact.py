"""The pre-trained model artefact: everything a worker needs on day one.

A ``ModelArtefact`` holds the collaborative item vectors (L2-normalised float32), the
time-decayed popularity at the end of the training data (``models.popularity`` entries),
the item categories, the content model for brand-new items, the item-item model
(``models.itemitem``, a sparse CSR matrix stored as its three arrays), the pre-trained
sequential rules (``models.transitions``) and the training metrics.

On disk it is two files named for its version, plus a pointer::

    <dir>/<version>.npz   arrays only (ids as a unicode array), read with allow_pickle=False
    <dir>/<version>.json  everything else, and the npz's SHA-256
    <dir>/LATEST          the newest saved version's name

No pickle anywhere. Files are written to a temporary name and renamed, so a reader
never sees half an artefact; ``LATEST`` is updated last.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.content import ContentModel
from models.itemitem import ItemItem
from models.transitions import Transitions

FloatArray = npt.NDArray[np.float32]

FORMAT: Final = "eddy-artefact-v1"
LATEST_FILE: Final = "LATEST"
VERSION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Versions are file-name and Redis-key safe."""

_VERSION_RE: Final = re.compile(VERSION_PATTERN)
_CONTENT_PREFIX: Final = "content."
_NORM_TOLERANCE: Final = 1e-3


class ArtefactError(ValueError):
    """An artefact that is malformed, inconsistent or missing a part."""


@dataclass(frozen=True, eq=False)
class ModelArtefact:
    """A trained model: item vectors, popularity, categories, content model, metrics.

    Row ``i`` of ``item_vectors`` (float32, L2-normalised) is item ``item_ids[i]``;
    ``item_from_content[i]`` is True when that vector came from the content model (an
    item with too few interactions), not from collaborative filtering. Such vectors are
    blurred averages that score high for everyone: measured in docs/model-choice.md,
    retrieving them on equal terms with CF vectors costs a third of HR@10 on MovieLens,
    so rank them separately or discounted (e.g. as exploration).
    ``popularity[item_id] = (score, anchor_ts)`` as in ``models.popularity``.
    ``content`` is ``None`` when the data had no item metadata. Arrays are read-only.
    """

    version: str
    created_at: float
    dataset: str
    config: dict[str, Any]
    item_ids: list[str]
    item_vectors: FloatArray = field(repr=False)
    item_from_content: npt.NDArray[np.bool_] = field(repr=False)
    popularity: dict[str, tuple[float, float]] = field(repr=False)
    item_categories: dict[str, list[str]] = field(repr=False)
    content: ContentModel | None = field(repr=False)
    metrics: dict[str, Any] = field(default_factory=dict)
    item_item: ItemItem | None = field(default=None, repr=False)
    """Pruned EASE item-item weights (``models.itemitem``); None in older artefacts."""
    transitions: Transitions | None = field(default=None, repr=False)
    """Pre-trained sequential rules (``models.transitions``); None in older artefacts."""
    rank_blend: dict[str, float] = field(default_factory=dict)
    """Blend weights chosen by training for this data (``models.training.rank_blend``),
    applied over ``RankConfig``'s by ``WorkerStep`` for users between sessions; empty:
    ``RankConfig``'s own for everyone."""

    def __post_init__(self) -> None:
        _validate(self)
        self.item_vectors.flags.writeable = False
        self.item_from_content.flags.writeable = False

    @property
    def dim(self) -> int:
        """Dimension of the item vectors."""
        return int(self.item_vectors.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    def row_of(self) -> dict[str, int]:
        """A fresh ``item_id -> row`` map."""
        return {item_id: row for row, item_id in enumerate(self.item_ids)}


def _validate(art: ModelArtefact) -> None:
    if not isinstance(art.version, str) or not _VERSION_RE.match(art.version):
        raise ArtefactError(f"version {art.version!r} is not a safe name ({VERSION_PATTERN})")
    if not math.isfinite(art.created_at):
        raise ArtefactError("created_at must be a finite unix time")
    vectors = art.item_vectors
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32 or vectors.ndim != 2:
        got = getattr(vectors, "dtype", type(vectors).__name__), np.shape(vectors)
        raise ArtefactError(f"item_vectors must be a float32 (n, d) array, got {got}")
    if vectors.shape[1] < 1:
        raise ArtefactError("item_vectors must have at least one dimension")
    if vectors.shape[0] != len(art.item_ids):
        raise ArtefactError(f"{len(art.item_ids)} item ids but {vectors.shape[0]} item vectors")
    if not all(isinstance(i, str) and i for i in art.item_ids):
        raise ArtefactError("item ids must be non-empty strings")
    if len(set(art.item_ids)) != len(art.item_ids):
        dupes = sorted(i for i, n in Counter(art.item_ids).items() if n > 1)
        raise ArtefactError(f"item ids are not unique: {dupes[:5]}")
    flags = art.item_from_content
    if (
        not isinstance(flags, np.ndarray)
        or flags.dtype != np.bool_
        or flags.shape != (len(art.item_ids),)
    ):
        raise ArtefactError(
            f"item_from_content must be a bool array of shape ({len(art.item_ids)},), "
            f"got {getattr(flags, 'dtype', type(flags).__name__)} {np.shape(flags)}"
        )
    if not np.isfinite(vectors).all():
        raise ArtefactError("item_vectors contain NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    if len(norms) and float(np.abs(norms - 1.0).max()) > _NORM_TOLERANCE:
        raise ArtefactError("item_vectors must be L2-normalised (row norms of 1)")
    if art.content is not None and art.content.dim != vectors.shape[1]:
        raise ArtefactError(
            f"content model has dimension {art.content.dim}, item vectors {vectors.shape[1]}"
        )
    for name, weight in art.rank_blend.items():
        if not isinstance(name, str) or not (weight >= 0 and math.isfinite(weight)):
            raise ArtefactError(f"rank_blend {name!r} must be a finite weight >= 0")
    for item_id, entry in art.popularity.items():
        if len(entry) != 2 or not all(math.isfinite(x) for x in entry):
            raise ArtefactError(f"popularity of {item_id!r} is not a finite (score, ts) pair")


# --------------------------------------------------------------------------- saving


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; workers may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _arrays(art: ModelArtefact) -> dict[str, Any]:
    arrays: dict[str, Any] = {
        "item_ids": np.asarray(art.item_ids, dtype=np.str_),
        "item_vectors": art.item_vectors,
        "item_from_content": art.item_from_content,
    }
    if art.content is not None:
        for name, arr in art.content.to_arrays().items():
            arrays[_CONTENT_PREFIX + name] = arr
    if art.item_item is not None:
        arrays |= art.item_item.to_arrays()
    if art.transitions is not None:
        arrays |= art.transitions.to_arrays()
    return arrays


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(artefact: ModelArtefact, directory: str | os.PathLike[str]) -> Path:
    """Write ``<directory>/<version>.npz`` and ``.json``, point ``LATEST`` at it.

    Returns the path of the ``.json`` manifest. Creates ``directory`` if needed and
    replaces an artefact of the same version.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    npz_path = out / f"{artefact.version}.npz"
    arrays = _arrays(artefact)
    _atomic_write(npz_path, lambda handle: np.savez(handle, **arrays))
    manifest = {
        "format": FORMAT,
        "version": artefact.version,
        "created_at": artefact.created_at,
        "dataset": artefact.dataset,
        "dim": artefact.dim,
        "n_items": len(artefact.item_ids),
        "arrays": npz_path.name,
        "arrays_sha256": _sha256(npz_path),
        "config": artefact.config,
        "metrics": artefact.metrics,
        "rank_blend": artefact.rank_blend,
        "content": None if artefact.content is None else artefact.content.to_json(),
        "popularity": {k: [v[0], v[1]] for k, v in artefact.popularity.items()},
        "item_categories": artefact.item_categories,
    }
    text = json.dumps(manifest, allow_nan=False, separators=(",", ":"))
    json_path = out / f"{artefact.version}.json"
    _atomic_write(json_path, lambda handle: handle.write(text.encode()))
    _atomic_write(out / LATEST_FILE, lambda handle: handle.write(f"{artefact.version}\n".encode()))
    return json_path


# --------------------------------------------------------------------------- loading


def latest(directory: str | os.PathLike[str]) -> Path | None:
    """The manifest ``LATEST`` names in ``directory``, or None if nothing was saved there.

    Raises ``ArtefactError`` if ``LATEST`` names a version whose files are missing.
    """
    pointer = Path(directory) / LATEST_FILE
    if not pointer.is_file():
        return None
    version = pointer.read_text(encoding="utf-8").strip()
    if not _VERSION_RE.match(version):
        raise ArtefactError(f"{pointer} does not hold a version name: {version[:80]!r}")
    manifest = pointer.parent / f"{version}.json"
    if not manifest.is_file():
        raise ArtefactError(f"{pointer} names {version}, but {manifest} is missing")
    return manifest


def _manifest_path(path: Path) -> Path:
    if path.is_dir():
        found = latest(path)
        if found is None:
            raise FileNotFoundError(f"no model artefact in {path} (no {LATEST_FILE} file)")
        return found
    if path.suffix in (".json", ".npz"):
        manifest = path.with_suffix(".json")
        if manifest.is_file():
            return manifest
    raise FileNotFoundError(f"no model artefact at {path}: give a directory, .json or .npz")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{path}: not a JSON manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ArtefactError(f"{path}: not an Eddy artefact (format {got!r}, want {FORMAT!r})")
    required = {"version", "created_at", "dataset", "dim", "n_items", "arrays", "config"}
    missing = required - set(data)
    if missing:
        raise ArtefactError(f"{path}: manifest lacks {sorted(missing)}")
    return data


def _read_arrays(path: Path, expected_sha: str | None) -> dict[str, npt.NDArray[Any]]:
    if not path.is_file():
        raise ArtefactError(f"arrays file {path} is missing")
    if expected_sha is not None and _sha256(path) != expected_sha:
        raise ArtefactError(f"{path} does not match its manifest's checksum (corrupt or replaced)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise ArtefactError(f"{path}: unreadable without pickle ({exc})") from None


def _content(arrays: Mapping[str, npt.NDArray[Any]], meta: Any) -> ContentModel | None:
    if meta is None:
        return None
    parts = {
        k[len(_CONTENT_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_CONTENT_PREFIX)
    }
    try:
        return ContentModel.from_arrays(parts, meta)
    except (ValueError, TypeError) as exc:
        raise ArtefactError(f"content model: {exc}") from None


def load(path: str | os.PathLike[str]) -> ModelArtefact:
    """Read an artefact: a directory (its ``LATEST``), or a ``.json``/``.npz`` file.

    Validates shapes, dimensions, unique ids, unit norms and the npz checksum, raising
    ``ArtefactError`` with the reason; ``FileNotFoundError`` if there is nothing there.
    """
    manifest_path = _manifest_path(Path(path))
    meta = _read_manifest(manifest_path)
    arrays = _read_arrays(manifest_path.parent / str(meta["arrays"]), meta.get("arrays_sha256"))
    for name in ("item_ids", "item_vectors", "item_from_content"):
        if name not in arrays:
            raise ArtefactError(f"{manifest_path}: arrays file lacks {name!r}")
    ids, vectors = arrays["item_ids"], arrays["item_vectors"]
    if ids.ndim != 1 or vectors.ndim != 2 or vectors.shape != (meta["n_items"], meta["dim"]):
        raise ArtefactError(
            f"{manifest_path}: expected {meta['n_items']} ids and vectors of dimension "
            f"{meta['dim']}, got ids {ids.shape} and vectors {vectors.shape}"
        )
    try:
        return ModelArtefact(
            version=str(meta["version"]),
            created_at=float(meta["created_at"]),
            dataset=str(meta["dataset"]),
            config=dict(meta["config"]),
            item_ids=[str(i) for i in ids.tolist()],
            item_vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            item_from_content=np.asarray(arrays["item_from_content"]),
            popularity={
                str(k): (float(v[0]), float(v[1]))
                for k, v in dict(meta.get("popularity", {})).items()
            },
            item_categories={
                str(k): [str(c) for c in v]
                for k, v in dict(meta.get("item_categories", {})).items()
            },
            content=_content(arrays, meta.get("content")),
            metrics=dict(meta.get("metrics", {})),
            item_item=ItemItem.from_arrays(arrays),
            transitions=Transitions.from_arrays(arrays),
            rank_blend={str(k): float(v) for k, v in dict(meta.get("rank_blend", {})).items()},
        )
    except ArtefactError as exc:
        raise ArtefactError(f"{manifest_path}: {exc}") from None
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ArtefactError(f"{manifest_path}: malformed manifest ({exc})") from None
