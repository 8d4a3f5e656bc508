"""Content model: item metadata -> the collaborative embedding space.

A brand-new item has no interactions, so collaborative filtering cannot place it. The
content model can: each item's title words, categories and tags become a TF-IDF vector
(scikit-learn's ``TfidfVectorizer``), and a ridge regression (scikit-learn ``Ridge``)
fitted from those features to the trained collaborative item vectors projects it into
the same space. ``embed`` returns L2-normalised float32 rows, ready for retrieval.

Tokens: lower-cased title words of two or more letters or digits (``w:love``), a
release-style year in brackets as its decade (``d:1990``), each category (``c:comedy``)
and each tag (``t:pixar``). Persistence is arrays (``to_arrays``) plus JSON
(``to_json``: the vocabulary and settings); no pickle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.linear_model import Ridge  # type: ignore[import-untyped]
from sklearn.preprocessing import normalize  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float32]

_WORD_RE: Final = re.compile(r"[^\W_]{2,}")
_YEAR_RE: Final = re.compile(r"\((1[89]\d\d|20\d\d)\)")
FORMAT: Final = "tfidf-ridge-v1"


class ItemText(Protocol):
    """What the content model reads from an item (``models.events.ItemUpsert`` fits)."""

    @property
    def title(self) -> str: ...

    @property
    def categories(self) -> Sequence[str]: ...

    @property
    def tags(self) -> Sequence[str]: ...


def item_tokens(item: ItemText) -> list[str]:
    """The item's content tokens: title words, decade, categories and tags, prefixed."""
    title = item.title.lower()
    tokens = [f"w:{word}" for word in _WORD_RE.findall(_YEAR_RE.sub(" ", title))]
    tokens += [f"d:{int(year) // 10 * 10}" for year in _YEAR_RE.findall(title)]
    tokens += [f"c:{cat.strip().lower()}" for cat in item.categories]
    tokens += [f"t:{tag.strip().lower()}" for tag in item.tags]
    return tokens


def _unit_rows(mat: npt.NDArray[np.floating[Any]]) -> FloatArray:
    out = np.asarray(mat, dtype=np.float64)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(out / norms, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class ContentModel:
    """Fitted TF-IDF vocabulary and ridge projection (``features @ weights + bias``).

    ``vocabulary[j]`` names feature row ``j`` of ``weights`` (V, d); ``idf`` is (V,);
    ``bias`` is (d,) and is what an item with no known token gets (the mean direction).
    """

    vocabulary: tuple[str, ...]
    idf: FloatArray = field(repr=False)
    weights: FloatArray = field(repr=False)
    bias: FloatArray = field(repr=False)
    alpha: float = 1.0

    def __post_init__(self) -> None:
        v, d = len(self.vocabulary), self.dim
        if self.idf.shape != (v,) or self.weights.shape != (v, d) or self.bias.shape != (d,):
            raise ValueError(
                f"content model shapes disagree: {v} terms, idf {self.idf.shape}, "
                f"weights {self.weights.shape}, bias {self.bias.shape}"
            )
        if len(set(self.vocabulary)) != v:
            raise ValueError("content model vocabulary has repeated terms")
        for arr in (self.idf, self.weights, self.bias):
            if not np.isfinite(arr).all():
                raise ValueError("content model holds NaN or infinite values")
            arr.flags.writeable = False

    @property
    def dim(self) -> int:
        """Dimension of the embedding space."""
        return int(self.bias.shape[0]) if self.bias.ndim == 1 else -1

    @classmethod
    def fit(
        cls,
        items: Sequence[ItemText],
        item_ids: Sequence[str],
        item_vectors: npt.ArrayLike,
        alpha: float = 1.0,
        *,
        min_df: int = 2,
        sample_weight: npt.ArrayLike | None = None,
    ) -> ContentModel:
        """Fit on ``items`` (row ``i`` is item ``item_ids[i]``, target ``item_vectors[i]``).

        Terms in fewer than ``min_df`` of these items are dropped; ``alpha`` is the
        ridge penalty; ``sample_weight`` (one per item) lets well-measured items count
        more. Targets are L2-normalised before fitting.
        """
        targets = np.asarray(item_vectors, dtype=np.float64)
        if targets.ndim != 2 or targets.shape[0] != len(items) or len(item_ids) != len(items):
            raise ValueError(
                f"need one id and one vector per item: {len(items)} items, "
                f"{len(item_ids)} ids, vectors of shape {targets.shape}"
            )
        if len(items) < 2:
            raise ValueError(f"need at least 2 items to fit a content model, got {len(items)}")
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item_ids must be unique")
        if not (alpha > 0 and np.isfinite(alpha)):
            raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")
        if not np.isfinite(targets).all():
            raise ValueError("item_vectors contain NaN or infinite values")
        docs = [item_tokens(item) for item in items]
        if not any(docs):
            raise ValueError("no item has a title, category or tag: nothing to learn from")
        vectorizer = TfidfVectorizer(
            analyzer=_identity, min_df=min(min_df, len(items)), sublinear_tf=True
        )
        try:
            features = vectorizer.fit_transform(docs)
        except ValueError as exc:  # every term below min_df
            raise ValueError(f"no content term occurs in {min_df}+ items: {exc}") from None
        vocabulary = tuple(str(t) for t in vectorizer.get_feature_names_out())
        ridge = Ridge(alpha=alpha, fit_intercept=True, solver="sparse_cg", tol=1e-6)
        ridge.fit(features, _unit_rows(targets), sample_weight=sample_weight)
        return cls(
            vocabulary=vocabulary,
            idf=np.asarray(vectorizer.idf_, dtype=np.float32),
            weights=np.ascontiguousarray(ridge.coef_.T, dtype=np.float32),
            bias=np.asarray(ridge.intercept_, dtype=np.float32),
            alpha=float(alpha),
        )

    def features(self, items: Sequence[ItemText]) -> sparse.csr_matrix:
        """TF-IDF rows (sublinear tf, L2-normalised) of ``items`` over the vocabulary."""
        counter = CountVectorizer(analyzer=_identity, vocabulary=list(self.vocabulary))
        counts = counter.transform([item_tokens(item) for item in items]).astype(np.float64)
        counts.data = 1.0 + np.log(counts.data)
        weighted = counts @ sparse.diags(self.idf.astype(np.float64))
        return sparse.csr_matrix(normalize(weighted, norm="l2", copy=False))

    def embed(self, items: Sequence[ItemText]) -> FloatArray:
        """Vectors for ``items``: float32 (n, d), L2-normalised, in the CF space."""
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        projected = self.features(items) @ self.weights.astype(np.float64)
        return _unit_rows(np.asarray(projected) + self.bias)

    def to_arrays(self) -> dict[str, FloatArray]:
        """The numeric parameters, for an ``.npz`` file."""
        return {"idf": self.idf, "weights": self.weights, "bias": self.bias}

    def to_json(self) -> dict[str, Any]:
        """The vocabulary and settings, JSON-serialisable."""
        return {"format": FORMAT, "alpha": self.alpha, "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, npt.ArrayLike], meta: Mapping[str, Any]
    ) -> ContentModel:
        """Rebuild from ``to_arrays()`` and ``to_json()``; raises ``ValueError`` if they
        do not fit together."""
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown content model format {meta.get('format')!r}")
        missing = {"idf", "weights", "bias"} - set(arrays)
        if missing:
            raise ValueError(f"content model arrays missing: {sorted(missing)}")
        vocabulary = meta.get("vocabulary")
        if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
            raise ValueError("content model vocabulary must be a list of strings")
        return cls(
            vocabulary=tuple(vocabulary),
            idf=np.array(arrays["idf"], dtype=np.float32),
            weights=np.array(arrays["weights"], dtype=np.float32),
            bias=np.array(arrays["bias"], dtype=np.float32),
            alpha=float(meta.get("alpha", 1.0)),
        )


def _identity(tokens: list[str]) -> list[str]:
    """Analyzer for documents that ``item_tokens`` already tokenised."""
    return tokens
