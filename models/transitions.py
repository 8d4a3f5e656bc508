"""Sequential transitions: which item users take next after which, learned from the stream.

Sequential rules (Ludewig & Jannach 2018; the ``sr`` baseline, ``models.sequential_rules``):
every time a user's event on item ``q`` comes ``g`` distinct items after their event on
``p`` (``1 <= g <= steps``), the rule ``p -> q`` gains ``1 / g``, and with ``backward``
``b > 0`` the reverse rule ``q -> p`` gains ``b / g``: items clicked together in a session
point to each other, whichever came first, as session-kNN's neighbour sessions do (on
YOOCHOOSE next-click validation ``b = 0.5`` lifts HR@20 by 0.017 with the sequential
weight at 50, ``docs/model-choice.md``). Pre-trained from the
training events (``fit_transitions``) and stored in the artefact; the worker's step then
keeps adding the rules every new event completes (``Transitions.learn``), so this is
item state that keeps learning online. A user's sequential score for candidate ``q`` is

    t(q) = sum over the user's ``steps`` newest history items p (position i, newest 0)
           of  w(p, q) / ((i + 1) * (W(p) + SMOOTHING)),

with ``W(p)`` the total weight of ``p``'s rules: the rule's share of what followed ``p``,
so a term that is large where sequences are predictable (sessions) and small where they
are not (a catalogue rated in random order), with no per-user rescaling.

Each row keeps at most ``max_per_item`` rules (the weakest dropped when it overflows
twice that), so memory stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from models.events import Event

PREFIX: Final = "transitions."
"""Prefix of the pre-trained rules' arrays in an artefact's npz."""
SMOOTHING: Final = 1.0
"""Added to a row's total weight: a rule seen once after a rare item counts less."""


class Transitions:
    """Rules ``p -> q`` with weights, mutable (see the module doc)."""

    def __init__(self, steps: int = 3, max_per_item: int = 200, backward: float = 0.0) -> None:
        if steps < 1 or max_per_item < 1:
            raise ValueError("steps and max_per_item must be >= 1")
        if not (backward >= 0.0 and math.isfinite(backward)):
            raise ValueError(f"backward must be finite and >= 0, got {backward!r}")
        self.steps = steps
        self.max_per_item = max_per_item
        self.backward = backward
        """Weight of the reverse rule ``q -> p`` relative to ``p -> q`` (0: the SR rules)."""
        self.rules: dict[str, dict[str, float]] = {}
        self.totals: dict[str, float] = {}
        """Source -> the total weight of its rules (pruned ones included)."""

    def __len__(self) -> int:
        return sum(len(r) for r in self.rules.values())

    def learn(self, history: Sequence[str], item_id: str) -> None:
        """Add the rules completed by an event on ``item_id`` after ``history`` (the
        user's distinct items before it, newest first)."""
        gap = 0
        for previous in history:
            if previous == item_id:
                continue
            gap += 1
            if gap > self.steps:
                break
            self._add(previous, item_id, 1.0 / gap)
            if self.backward > 0:
                self._add(item_id, previous, self.backward / gap)

    def _add(self, source: str, target: str, weight: float) -> None:
        """Add ``weight`` to the rule ``source -> target`` (pruning the row if it overflows)."""
        row = self.rules.setdefault(source, {})
        row[target] = row.get(target, 0.0) + weight
        self.totals[source] = self.totals.get(source, 0.0) + weight
        if len(row) > 2 * self.max_per_item:
            keep = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_per_item]
            self.rules[source] = dict(keep)

    def scores(self, history: Sequence[str]) -> dict[str, float]:
        """``t(q)`` for every ``q`` some rule of the newest ``steps`` items reaches."""
        out: dict[str, float] = {}
        for i, previous in enumerate(history[: self.steps]):
            row = self.rules.get(previous)
            if not row:
                continue
            scale = self.scale(previous, i)
            for q, w in row.items():
                out[q] = out.get(q, 0.0) + w * scale
        return out

    def scale(self, source: str, position: int) -> float:
        """The factor on ``w(source, q)`` at history ``position`` in ``t(q)``."""
        return 1.0 / ((position + 1) * (self.totals.get(source, 0.0) + SMOOTHING))

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        sources = sorted(self.rules)
        targets: list[str] = []
        weights: list[float] = []
        indptr = [0]
        for p in sources:
            row = self.rules[p]
            for q in sorted(row):
                targets.append(q)
                weights.append(row[q])
            indptr.append(len(targets))
        return {
            PREFIX + "sources": np.asarray(sources, dtype=np.str_),
            PREFIX + "targets": np.asarray(targets, dtype=np.str_),
            PREFIX + "weights": np.asarray(weights, dtype=np.float64),
            PREFIX + "totals": np.asarray([self.totals.get(p, 0.0) for p in sources]),
            PREFIX + "indptr": np.asarray(indptr, dtype=np.int64),
            PREFIX + "config": np.asarray([self.steps, self.max_per_item], dtype=np.int64),
            PREFIX + "backward": np.asarray([self.backward], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[np.generic]]) -> Transitions | None:
        """The rules stored by ``to_arrays``, or None if ``arrays`` holds none (an older
        artefact without ``backward`` was trained without reverse rules: 0)."""
        if PREFIX + "sources" not in arrays:
            return None
        steps, max_per_item = (int(x) for x in arrays[PREFIX + "config"].tolist())
        stored = arrays.get(PREFIX + "backward")
        backward = 0.0 if stored is None else float(stored.tolist()[0])
        out = cls(steps, max_per_item, backward)
        sources = [str(s) for s in arrays[PREFIX + "sources"].tolist()]
        targets = [str(t) for t in arrays[PREFIX + "targets"].tolist()]
        weights = [float(w) for w in arrays[PREFIX + "weights"].tolist()]
        bounds = [int(b) for b in arrays[PREFIX + "indptr"].tolist()]
        totals = [float(t) for t in arrays[PREFIX + "totals"].tolist()]
        for n, p in enumerate(sources):
            a, b = bounds[n], bounds[n + 1]
            out.rules[p] = dict(zip(targets[a:b], weights[a:b], strict=True))
            out.totals[p] = totals[n]
        return out

    def copy(self) -> Transitions:
        out = Transitions(self.steps, self.max_per_item, self.backward)
        out.rules = {p: dict(row) for p, row in self.rules.items()}
        out.totals = dict(self.totals)
        return out


def fit_transitions(
    events: Sequence[Event], steps: int = 3, max_per_item: int = 200, backward: float = 0.0
) -> Transitions:
    """The rules of every user's time-ordered events (distinct items, as in a profile),
    reverse rules weighted ``backward``."""
    out = Transitions(steps, max_per_item, backward)
    recent: dict[str, list[str]] = {}
    for event in sorted(events, key=lambda e: (e.ts, e.user_id, e.item_id)):
        history = recent.setdefault(event.user_id, [])
        out.learn(history, event.item_id)
        if event.item_id in history:
            history.remove(event.item_id)
        history.insert(0, event.item_id)
        del history[steps + 1 :]
    for p, row in out.rules.items():
        if len(row) > max_per_item:
            out.rules[p] = dict(sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[:max_per_item])
    return out
