"""``eddy evaluate``: the command-line face of ``models.evaluation``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from models.datasets import BUNDLED_MOVIELENS, Dataset, RatingMapping, detect_format, load_dataset
from models.engine import EngineConfig
from models.evaluation import (
    MODELS,
    PROTOCOLS,
    EvalConfig,
    Protocol,
    bandit_replay,
    evaluate,
    summary_rows,
)
from models.exploration import ExploreConfig
from models.exploration import explore as run_explore
from models.popularity import half_life_seconds
from models.profile import ProfileConfig
from models.recommender import DEFAULT_EPSILON
from models.training import TrainConfig

console = Console()
err = Console(stderr=True)

Format = Literal["auto", "movielens", "yoochoose", "table"]


def load(
    path: Path,
    fmt: Format,
    table: dict[str, Any],
) -> Dataset:
    """Load ``path``; table options apply only to CSV/TSV tables."""
    resolved = detect_format(path) if fmt == "auto" and path.exists() else fmt
    try:
        return load_dataset(path, fmt, **(table if resolved == "table" else {}))
    except (OSError, ValueError) as exc:
        err.print(f"[bold red]error:[/] cannot read {path}: {exc}")
        raise typer.Exit(code=1) from exc


def table_options(
    user_col: str,
    item_col: str,
    time_col: str,
    type_col: str | None,
    rating_col: str | None,
    purchase_at: float,
    click_at: float,
    time_format: str,
    items_path: Path | None,
) -> dict[str, Any]:
    """``models.datasets.load_table`` keyword arguments from the command-line options."""
    return {
        "user_col": user_col,
        "item_col": item_col,
        "time_col": time_col,
        "type_col": type_col,
        "rating_col": rating_col,
        "mapping": RatingMapping(purchase_at=purchase_at, click_at=click_at),
        "time_format": time_format,
        "items_path": items_path,
    }


def evaluate_command(
    path: Annotated[
        Path | None,
        typer.Argument(help="Dataset: MovieLens dir, YOOCHOOSE file, CSV/TSV (default: bundled)."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format")] = "auto",
    test: Annotated[
        Path | None,
        typer.Option(help="A fixed test file in the same format (PATH is then the train part)."),
    ] = None,
    protocol: Annotated[str, typer.Option(help=f"One of {', '.join(PROTOCOLS)}.")] = "holdout-user",
    fraction: Annotated[float, typer.Option(help="Test share of the events.")] = 0.2,
    k: Annotated[list[int] | None, typer.Option("--k", help="Cut-off (repeatable).")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated models.")] = ",".join(MODELS),
    seed: Annotated[int, typer.Option(help="Split, training and exploration seed.")] = 0,
    half_life_days: Annotated[
        float, typer.Option(help="Decay of user profiles and popularity (EDDY_HALF_LIFE_DAYS).")
    ] = 30.0,
    max_events: Annotated[
        int | None, typer.Option(help="Prequential: score only the latest N events.")
    ] = None,
    skip_new_users: Annotated[
        bool, typer.Option(help="Prequential: do not score a user's first event (next-click).")
    ] = False,
    bandit_epsilon: Annotated[
        float | None, typer.Option(help="Also replay the epsilon-greedy policy (CTR, IPS/SNIPS).")
    ] = None,
    explore: Annotated[
        bool,
        typer.Option(
            help="Also measure the price of exploring: Eddy's NDCG greedy vs epsilon-greedy, "
            "and IPS/SNIPS/DR estimates with bootstrap intervals (docs/benchmarks.md)."
        ),
    ] = False,
    explore_epsilons: Annotated[
        str, typer.Option(help="Explore: the epsilons measured (comma-separated).")
    ] = "0,0.05,0.1,0.2",
    explore_protected: Annotated[
        str, typer.Option(help="Explore: protected-slot counts estimated (comma-separated).")
    ] = "0,1,2,3",
    explore_logging_epsilon: Annotated[
        float, typer.Option(help="Explore: epsilon of the logged lists, in (0, 0.5].")
    ] = DEFAULT_EPSILON.epsilon0,
    explore_draws: Annotated[
        int, typer.Option(help="Explore: logged and direct lists per round.")
    ] = 1,
    explore_direct_protected: Annotated[
        int, typer.Option(help="Explore (holdout): protected slots of the measured lists.")
    ] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    user_col: Annotated[str, typer.Option(help="Table: user column.")] = "user_id",
    item_col: Annotated[str, typer.Option(help="Table: item column.")] = "item_id",
    time_col: Annotated[str, typer.Option(help="Table: time column.")] = "ts",
    type_col: Annotated[str | None, typer.Option(help="Table: event type column.")] = None,
    rating_col: Annotated[str | None, typer.Option(help="Table: rating column.")] = None,
    purchase_at: Annotated[float, typer.Option(help="Table: rating >= this is a purchase.")] = 4.0,
    click_at: Annotated[float, typer.Option(help="Table: rating >= this is a click.")] = 3.0,
    time_format: Annotated[
        Literal["unix", "unix_ms", "iso"], typer.Option(help="Table: time encoding.")
    ] = "unix",
    items_path: Annotated[Path | None, typer.Option(help="Table: item file.")] = None,
) -> None:
    """Score Eddy and the baselines offline on a dataset (same code as the worker)."""
    if protocol not in PROTOCOLS:
        err.print(f"[bold red]error:[/] unknown protocol {protocol!r}; use one of {PROTOCOLS}")
        raise typer.Exit(code=1)
    options = table_options(
        user_col,
        item_col,
        time_col,
        type_col,
        rating_col,
        purchase_at,
        click_at,
        time_format,
        items_path,
    )
    source = path or BUNDLED_MOVIELENS
    dataset = load(source, fmt, options)
    held = load(test, fmt, options).events if test is not None else None
    try:
        cfg = EvalConfig(
            protocol=_protocol(protocol),
            ks=tuple(k or (10, 20)),
            fraction=fraction,
            seed=seed,
            models=tuple(m.strip() for m in models.split(",") if m.strip()),
            skip_new_users=skip_new_users,
            max_events=max_events,
            engine=EngineConfig(
                train=TrainConfig(seed=seed, half_life_days=half_life_days),
                profile=ProfileConfig(half_life_s=half_life_seconds(half_life_days)),
                seed=seed,
            ),
        )
        xcfg = ExploreConfig(
            epsilons=_floats(explore_epsilons),
            protected=tuple(int(p) for p in _floats(explore_protected)),
            logging_epsilon=explore_logging_epsilon,
            draws=explore_draws,
            seed=seed,
            direct_protected=explore_direct_protected,
        )
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    console.print(f"{dataset.summary()}; protocol {protocol}")
    started = time.perf_counter()
    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        results = evaluate(dataset, cfg, held, progress)
        bandit = (
            bandit_replay(dataset, cfg, bandit_epsilon, held, progress)
            if bandit_epsilon is not None
            else None
        )
        price = run_explore(dataset, cfg, xcfg, held, progress) if explore else None
    show(results, cfg, bandit, bandit_epsilon)
    if price is not None:
        show_explore(price)
    if json_out is not None:
        doc: dict[str, Any] = {
            "dataset": dataset.name,
            "source": str(source),
            "test": str(test) if test else None,
            "config": {
                "protocol": protocol,
                "fraction": fraction,
                "ks": list(cfg.ks),
                "seed": seed,
                "max_events": max_events,
                "skip_new_users": skip_new_users,
                "half_life_days": half_life_days,
            },
            "results": results,
            "bandit": None if bandit is None else {"epsilon": bandit_epsilon, **bandit},
            "explore": price,
            "seconds": round(time.perf_counter() - started, 1),
        }
        json_out.write_text(json.dumps(doc, indent=1))
        console.print(f"wrote {json_out}")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _protocol(name: str) -> Protocol:
    for p in PROTOCOLS:
        if p == name:
            return p
    raise ValueError(f"unknown protocol {name!r}")


def show(
    results: dict[str, dict[str, float]],
    cfg: EvalConfig,
    bandit: dict[str, float] | None,
    epsilon: float | None,
) -> None:
    """Print the metrics (rows) per model (columns), and the bandit replay."""
    if cfg.protocol == "prequential":
        metrics: tuple[str, ...] = ("hr", "mrr", "ndcg")
        extra = ["events", "repeats"]
    else:
        metrics = ("hr", "precision", "recall", "ndcg", "map", "mrr", "coverage", "novelty")
        extra = ["users"]
    keys = [f"{m}@{k}" for k in cfg.ks for m in metrics]
    keys += [f"diversity@{k}" for k in cfg.ks if any(f"diversity@{k}" in r for r in results)]
    keys += ["pool_recall"] if any("pool_recall" in r for r in results) else []
    keys += extra
    table = Table(title=f"{cfg.protocol}")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    columns = summary_rows(results, keys)
    for n, key in enumerate(keys, 1):
        table.add_row(key, *(column[n] for column in columns))
    console.print(table)
    if bandit is not None:
        table = Table(title=f"bandit replay, epsilon {epsilon}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in zip(bandit, summary_rows({"": bandit}, list(bandit))[0][1:], strict=True):
            table.add_row(key, value)
        console.print(table)


def _ci(row: dict[str, Any], name: str) -> str:
    return f"{row[name]:.4f} [{row[name + '_low']:.4f}, {row[name + '_high']:.4f}]"


def show_explore(report: dict[str, Any]) -> None:
    """Print the price of exploring: direct NDCG per epsilon, then the estimates."""
    k = report["k"]
    table = Table(
        title=f"price of exploring, measured: NDCG@{k} per epsilon, protected "
        f"{report['direct_protected']} "
        f"({report['rounds']:,} rounds, {report['users']:,} users, 95% bootstrap CI)"
    )
    for name in ("epsilon", f"ndcg@{k}", "price (greedy - it)"):
        table.add_column(name, justify="right")
    for eps, row in report["direct"].items():
        table.add_row(eps, _ci(row, "ndcg"), _ci(row, "price"))
    console.print(table)
    table = Table(
        title=f"off-policy estimates of NDCG@{k} from lists logged at epsilon "
        f"{report['logging_epsilon']} (logged NDCG {report['logged_ndcg']:.4f})"
    )
    for name in ("epsilon", "protected", "direct", "IPS", "SNIPS", "DR", "DR price"):
        table.add_column(name, justify="right")
    for row in report["estimates"]:
        direct = row.get("direct_ndcg")
        table.add_row(
            str(row["epsilon"]),
            str(row["protected"]),
            "" if direct is None else f"{direct:.4f}",
            _ci(row, "ips"),
            _ci(row, "snips"),
            _ci(row, "dr"),
            _ci(row, "price_dr"),
        )
    console.print(table)
