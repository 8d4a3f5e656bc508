"""A worker's view of the items: vectors in a retrieval index, quality, first-seen times.

It starts from the pre-trained artefact; a catalog upsert for an item the index does not
know gives it its content vector at once, and events move item vectors online (an SGD
step toward the items co-consumed in the same user's recent history). Pure: the worker
(``streams.processor``) and the offline evaluator (``models.engine``) both drive it.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from models.artefact import ModelArtefact
from models.events import ItemUpsert
from models.itemitem import ItemItem
from models.online import co_occurrence_step
from models.popularity import Ranked
from models.quality import ItemQuality
from models.retrieval import FaissRetriever, Retriever
from models.transitions import Transitions

ONLINE_LR = 0.05
"""Learning rate of the online co-occurrence step."""
ONLINE_REG = 0.5
"""Pull of an item's online vector back toward its pre-trained one."""
CONTEXT_ITEMS = 5
"""Recent history items an event's item is moved toward."""
NEW_PER_CATEGORY = 50
"""Newest items remembered per category for "new in <category>"."""
CHANGE_LOG = 100_000
"""Catalog changes remembered for ``catalog_changes`` (older: "anything may have changed")."""


class ItemState:
    """Implements ``models.recommender.ItemView`` over the artefact and the catalog table."""

    def __init__(self, artefact: ModelArtefact, catalog: Mapping[str, Any]) -> None:
        self._catalog = catalog
        self._artefact = artefact
        self._retriever = FaissRetriever.from_arrays(
            np.asarray(artefact.item_ids), artefact.item_vectors
        )
        self._anchor = artefact.row_of()
        self._from_content = {
            i for i, cold in zip(artefact.item_ids, artefact.item_from_content, strict=True) if cold
        }
        self._first_seen: MutableMapping[str, float] = {}
        self._new: dict[str, deque[str]] = {}
        self._online: set[str] = set()
        self._quality = ItemQuality()
        self._transitions = None if artefact.transitions is None else artefact.transitions.copy()
        self.global_top: Ranked = []
        self.category_top: Mapping[str, Ranked] = {}
        self._version = 0
        self._changes: deque[tuple[int, str]] = deque(maxlen=CHANGE_LOG)

    # --- ItemView -----------------------------------------------------------------------
    @property
    def retriever(self) -> Retriever:
        return self._retriever

    @property
    def quality(self) -> ItemQuality:
        return self._quality

    @property
    def item_item(self) -> ItemItem | None:
        return self._artefact.item_item

    @property
    def transitions(self) -> Transitions | None:
        """The artefact's sequential rules, extended online by this worker's step."""
        return self._transitions

    def categories(self, item_id: str) -> Sequence[str]:
        doc = self._catalog.get(item_id)
        if doc is not None:
            return list(doc["categories"])
        return self._artefact.item_categories.get(item_id, [])

    def title(self, item_id: str) -> str:
        doc = self._catalog.get(item_id)
        return str(doc.get("title", "")) if doc is not None else ""

    def available(self, item_id: str) -> bool:
        doc = self._catalog.get(item_id)
        return bool(doc.get("available", True)) if doc is not None else True

    def first_seen(self, item_id: str) -> float | None:
        return self._first_seen.get(item_id)

    def from_content(self, item_id: str) -> bool:
        return item_id in self._from_content

    def new_items(self, category: str) -> Sequence[str]:
        """Items added online in ``category``, newest first (the ranker applies the window)."""
        return list(reversed(self._new.get(category, ())))

    # --- learning -----------------------------------------------------------------------
    def vector(self, item_id: str) -> np.ndarray | None:
        return self._retriever.vector(item_id)

    def catalog_changes(self, since: int) -> tuple[int, Collection[str] | None]:
        if since == self._version:
            return since, ()
        if since > self._version or not self._changes or self._changes[0][0] > since + 1:
            return self._version, None
        changed: list[str] = []
        for version, item_id in reversed(self._changes):
            if version <= since:
                break
            changed.append(item_id)
        return self._version, changed

    def on_item(self, item: ItemUpsert, seen_at: float | None = None) -> bool:
        """A catalog upsert (the catalog already holds it): a change for
        ``catalog_changes``; an unknown item gets its content vector. True if added.

        Unavailable items keep their vector; the ranker never shows them."""
        self._version += 1
        self._changes.append((self._version, item.item_id))
        if self._retriever.vector(item.item_id) is not None or self._artefact.content is None:
            return False
        vector = self._artefact.content.embed([item])
        self._retriever.upsert([item.item_id], vector)
        self._from_content.add(item.item_id)
        self._first_seen[item.item_id] = time.time() if seen_at is None else seen_at
        for category in item.categories:
            self._new.setdefault(category, deque(maxlen=NEW_PER_CATEGORY)).append(item.item_id)
        return True

    def step(self, item_id: str, history: Sequence[str]) -> np.ndarray | None:
        """``item_id``'s vector moved toward the user's other recent items (None: no move).

        Pure with respect to this state: the caller publishes the result, and every worker
        applies it with ``set_vector``."""
        vec = self._retriever.vector(item_id)
        if vec is None:
            return None
        context = [
            v
            for i in history[:CONTEXT_ITEMS]
            if i != item_id
            if (v := self._retriever.vector(i)) is not None
        ]
        if not context:
            return None
        row = self._anchor.get(item_id)
        anchor = self._artefact.item_vectors[row] if row is not None else vec
        return co_occurrence_step(vec, np.stack(context), ONLINE_LR, ONLINE_REG, anchor=anchor)

    def set_vector(self, item_id: str, vector: Sequence[float] | np.ndarray) -> None:
        """Apply an item vector learned online (by whichever worker owns the item)."""
        self.set_vectors([item_id], [vector])

    def set_vectors(
        self, item_ids: Sequence[str], vectors: Sequence[Sequence[float] | np.ndarray]
    ) -> None:
        """``set_vector`` for many items, as one index update (of the right dimension)."""
        dim = self._retriever.dim
        keep = [n for n, v in enumerate(vectors) if np.shape(v) == (dim,)]
        if not keep:
            return
        ids = [item_ids[n] for n in keep]
        self._retriever.upsert(ids, np.asarray([vectors[n] for n in keep], dtype=np.float32))
        self._online.update(ids)

    def online_vector(self, item_id: str) -> np.ndarray | None:
        """``item_id``'s vector if it was learned online (None: still the artefact's)."""
        return self._retriever.vector(item_id) if item_id in self._online else None

    def digest(self) -> str:
        """A short hash of every vector learned online and every item's quality totals,
        equal on workers that agree (one pass over arrays: it runs every few seconds)."""
        h = hashlib.sha256()
        ids, matrix = self._retriever.to_arrays()
        row = {item_id: n for n, item_id in enumerate(ids.tolist())}
        kept = [i for i in sorted(self._online) if i in row]
        h.update("\x00".join(kept).encode())
        rows = np.fromiter(map(row.__getitem__, kept), np.int64, len(kept))
        h.update(np.round(matrix[rows], 5).astype(np.float32).tobytes())
        rated = sorted(self._quality)
        h.update("\x00".join(rated).encode())
        stats = [self._quality.stats(i) for i in rated]
        h.update(np.asarray(stats, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    @property
    def online_items(self) -> int:
        return len(self._online)
