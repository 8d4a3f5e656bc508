"""How the command-line tools print a list."""

from __future__ import annotations

from rich.table import Table


def render_list(items: list, titles: dict[str, str], title: str) -> Table:  # type: ignore[type-arg]
    """A rich table of a list: rank, item, title, score, propensity, reason."""
    table = Table(title=title, title_justify="left")
    for col in ("#", "item", "title", "score", "p", "reason"):
        table.add_column(col)
    for rank, item in enumerate(items, 1):
        table.add_row(
            str(rank),
            item.item_id,
            titles.get(item.item_id, ""),
            f"{item.score:.3f}",
            f"{item.propensity:.3g}",
            item.reason,
        )
    return table
