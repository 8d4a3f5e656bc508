"""Retrieval recall: how many of the test items the candidate pools contain.

A retrieval stage produces, for each test case, a pool of candidates that a ranker then
orders; whatever is not in the pool can never be recommended. ``pool_recall`` is the
share of the test items that made it into their case's pool, independent of any ranking.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal


def pool_recall(
    pools: Sequence[Collection[str]],
    targets: Sequence[Collection[str]],
    average: Literal["micro", "macro"] = "micro",
) -> float:
    """The share of test items present in their case's candidate pool.

    ``pools[c]`` is the pool produced for case ``c`` and ``targets[c]`` its test item(s)
    (repeated test items of one case count once). ``"micro"``: hits over all test items,
    ``sum_c |T_c & P_c| / sum_c |T_c|``; ``"macro"``: the mean over cases of
    ``|T_c & P_c| / |T_c|``. Cases without a test item do not count under either. No
    test item at all gives ``0.0``. Raises ``ValueError`` if the two sequences differ in
    length or ``average`` is unknown.
    """
    if len(pools) != len(targets):
        raise ValueError(f"{len(pools)} pools for {len(targets)} test cases")
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', not {average!r}")
    hits = total = 0
    shares: list[float] = []
    for pool, target in zip(pools, targets, strict=True):
        wanted = set(target)
        if not wanted:
            continue
        members = pool if isinstance(pool, set | frozenset | dict) else set(pool)
        found = sum(1 for item in wanted if item in members)
        hits += found
        total += len(wanted)
        shares.append(found / len(wanted))
    if not total:
        return 0.0
    return hits / total if average == "micro" else sum(shares) / len(shares)
