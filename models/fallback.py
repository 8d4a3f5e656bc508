"""Lists without a trained model: the user's category affinities over time-decayed popularity.

Candidates are the popular items of the user's strongest categories, weighted by the
user's share of affinity for each category, topped up with globally trending items.
Items the user recently interacted with or bought are not recommended again.
"""

from __future__ import annotations

from collections.abc import Mapping

from models.popularity import Ranked
from models.profile import UserProfile
from models.reclist import RecItem

TRENDING_WEIGHT = 0.1
"""Trending items rank below any item from a category the user likes."""


def category_reason(category: str) -> str:
    return f"popular in {category}"


def popular_items(ranked: Ranked, k: int, reason: str = "trending") -> list[RecItem]:
    """A fallback list straight from a popularity ranking."""
    return [RecItem(item_id=i, score=round(s, 6), reason=reason) for i, s in ranked[:k]]


def popular_list(
    profile: UserProfile,
    category_top: Mapping[str, Ranked],
    global_top: Ranked,
    k: int,
    n_categories: int = 3,
) -> list[RecItem]:
    """Top ``k`` items for ``profile`` with reasons, best first."""
    exclude = set(profile.recent) | set(profile.purchased)
    best: dict[str, tuple[float, str]] = {}
    top = [(c, w) for c, w in profile.top_categories(n_categories) if w > 0]
    total = sum(w for _, w in top)
    for cat, weight in top:
        share = weight / total
        for item_id, pop in category_top.get(cat, ()):
            if item_id in exclude:
                continue
            score = share * pop
            if score > best.get(item_id, (0.0, ""))[0]:
                best[item_id] = (score, category_reason(cat))
    # Trending fill-in is scaled below the weakest category item, so it never outranks one.
    floor = min((s for s, _ in best.values()), default=1.0)
    for item_id, pop in global_top:
        if item_id not in exclude and item_id not in best:
            best[item_id] = (TRENDING_WEIGHT * pop * floor, "trending")
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
    return [RecItem(item_id=i, score=round(s, 6), reason=r) for i, (s, r) in ranked]
