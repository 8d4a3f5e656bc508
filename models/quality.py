"""Item quality learned online from impressions and rewards, with a Beta prior.

Each tracked item keeps two running totals: impressions (times shown) and rewards (what
the shows earned: a click is 1, a purchase is worth more; the caller chooses). The
score is the Beta posterior mean::

    (alpha0 + rewards) / (alpha0 + beta0 + max(impressions, rewards))

Trials are clamped up to the rewards, so a reward with no recorded impression (late or
lost impression event) or a purchase worth more than its impressions still gives a
score in (0, 1), and the totals do not depend on the order events arrive in. An item
never seen scores the prior mean ``alpha0 / (alpha0 + beta0)``.

At most ``max_items`` items are tracked; updating an item marks it recently used and
the least recently updated item is forgotten beyond the bound (reads do not count).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt


def _check_amount(name: str, value: float) -> float:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


class ItemQuality:
    """Online Beta-posterior quality per item, bounded to ``max_items`` items.

    The default prior is worth 21 impressions at a 1-in-21 reward rate, a
    click-through-like rate, so one lucky click does not put a new item on top.
    """

    def __init__(self, alpha0: float = 1.0, beta0: float = 20.0, max_items: int = 100_000) -> None:
        if not (alpha0 > 0 and beta0 > 0 and math.isfinite(alpha0 + beta0)):
            raise ValueError(f"alpha0 and beta0 must be finite and > 0, got {alpha0}, {beta0}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.alpha0 = float(alpha0)
        self.beta0 = float(beta0)
        self.max_items = int(max_items)
        self._stats: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def prior_mean(self) -> float:
        """Score of an item with no data."""
        return self.alpha0 / (self.alpha0 + self.beta0)

    def _add(self, item_id: str, impressions: float, rewards: float) -> None:
        n, r = self._stats.pop(item_id, (0.0, 0.0))
        self._stats[item_id] = (n + impressions, r + rewards)
        while len(self._stats) > self.max_items:
            self._stats.popitem(last=False)

    def record_impression(self, item_id: str, n: float = 1) -> None:
        """``item_id`` was shown ``n`` more times."""
        self._add(item_id, _check_amount("n", n), 0.0)

    def record_reward(self, item_id: str, reward: float) -> None:
        """A show of ``item_id`` earned ``reward`` (e.g. click 1, purchase 5)."""
        self._add(item_id, 0.0, _check_amount("reward", reward))

    def set(self, item_id: str, impressions: float, rewards: float) -> None:
        """Replace ``item_id``'s totals (as broadcast by the worker that owns the item)."""
        n = _check_amount("impressions", impressions)
        r = _check_amount("rewards", rewards)
        self._stats.pop(item_id, None)
        self._add(item_id, n, r)

    def stats(self, item_id: str) -> tuple[float, float]:
        """(impressions, rewards) recorded for ``item_id``; zeros if not tracked."""
        return self._stats.get(item_id, (0.0, 0.0))

    def score(self, item_id: str) -> float:
        """Posterior mean quality of ``item_id``, in (0, 1)."""
        n, r = self.stats(item_id)
        return (self.alpha0 + r) / (self.alpha0 + self.beta0 + max(n, r))

    def __len__(self) -> int:
        return len(self._stats)

    def __iter__(self) -> Iterator[str]:
        """Tracked item ids, least recently updated first."""
        return iter(list(self._stats))

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._stats

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Plain arrays for ``np.savez`` (least recently updated item first)."""
        ids = list(self._stats)
        stats = np.array(list(self._stats.values()), dtype=np.float64).reshape(-1, 2)
        return {
            "item_ids": np.array(ids, dtype=np.str_),
            "impressions": stats[:, 0].copy(),
            "rewards": stats[:, 1].copy(),
            "prior": np.array([self.alpha0, self.beta0], dtype=np.float64),
            "max_items": np.array(self.max_items, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> ItemQuality:
        """Rebuild from ``to_arrays`` output, e.g. ``np.load(path, allow_pickle=False)``."""
        missing = {"item_ids", "impressions", "rewards", "prior", "max_items"} - set(arrays)
        if missing:
            raise ValueError(f"item quality arrays lack {sorted(missing)}")
        ids = [str(i) for i in np.asarray(arrays["item_ids"]).ravel()]
        imps = np.asarray(arrays["impressions"], dtype=np.float64).ravel()
        rews = np.asarray(arrays["rewards"], dtype=np.float64).ravel()
        if not len(ids) == len(imps) == len(rews):
            raise ValueError(
                f"item quality arrays disagree in length: {len(ids)} ids, "
                f"{len(imps)} impressions, {len(rews)} rewards"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("item quality arrays repeat an item id")
        alpha0, beta0 = (float(x) for x in np.asarray(arrays["prior"], dtype=np.float64))
        quality = cls(alpha0, beta0, int(np.asarray(arrays["max_items"])))
        for item_id, n, r in zip(ids, imps.tolist(), rews.tolist(), strict=True):
            quality._add(item_id, _check_amount("impressions", n), _check_amount("rewards", r))
        return quality
