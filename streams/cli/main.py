"""The ``eddy`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from infra import devstack
from streams.cli.evaluate import evaluate_command
from streams.cli.forget import forget_command
from streams.cli.render import render_list
from streams.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
dev = typer.Typer(no_args_is_help=True, help="The embedded dev stack (broker + redis-server).")
app.add_typer(dev, name="dev")
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return load_settings()


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


@app.command()
def worker() -> None:
    """Run a worker: consume events, update profiles, publish lists to Redis."""
    from models.artefact import ArtefactError
    from streams.app import run_worker
    from streams.topics import create_topics

    settings = _settings()
    try:
        create_topics(settings)
        run_worker(settings)
    except (RuntimeError, ArtefactError) as exc:
        raise _fail(str(exc)) from exc


@app.command()
def topics() -> None:
    """Create Eddy's topics (events, items, DLQ) with the configured partitions."""
    from streams.topics import create_topics, topic_specs

    settings = _settings()
    try:
        result = create_topics(settings)
    except RuntimeError as exc:
        raise _fail(str(exc)) from exc
    for spec in topic_specs(settings):
        console.print(f"{spec.name:<24} {result[spec.name]:<8} {spec.purpose}")


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked)."""
    console.print_json(json.dumps(_settings().safe_dict(), default=str))


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Directory to write the JSON Schemas to.")] = Path(
        "schemas"
    ),
) -> None:
    """Write the JSON Schemas of events, item upserts and recommendation lists."""
    from models.schemas import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for name, body in json_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        console.print(f"wrote {path}")


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="Dataset: MovieLens dir, YOOCHOOSE file, CSV/TSV.")],
    fmt: Annotated[
        Literal["auto", "movielens", "yoochoose", "table"], typer.Option("--format")
    ] = "auto",
    rate: Annotated[float | None, typer.Option(help="Events per second (default: max).")] = None,
    limit: Annotated[int | None, typer.Option(help="Send at most this many events.")] = None,
    user_col: Annotated[str, typer.Option(help="Table format: user column.")] = "user_id",
    item_col: Annotated[str, typer.Option(help="Table format: item column.")] = "item_id",
    time_col: Annotated[str, typer.Option(help="Table format: time column.")] = "ts",
    type_col: Annotated[str | None, typer.Option(help="Table format: event type column.")] = None,
    rating_col: Annotated[str | None, typer.Option(help="Table format: rating column.")] = None,
    time_format: Annotated[
        Literal["unix", "unix_ms", "iso"], typer.Option(help="Table format: time encoding.")
    ] = "unix",
    items_path: Annotated[Path | None, typer.Option(help="Table format: item file.")] = None,
) -> None:
    """Produce a dataset's catalog and events to Kafka in time order."""
    from models.datasets import RatingMapping
    from streams.cli.evaluate import load, table_options
    from streams.cli.replay import replay as do_replay

    settings = _settings()
    mapping = RatingMapping()
    options = table_options(
        user_col,
        item_col,
        time_col,
        type_col,
        rating_col,
        mapping.purchase_at,
        mapping.click_at,
        time_format,
        items_path,
    )
    dataset = load(path, fmt, options)
    if dataset.skipped:
        err.print(f"skipped {dataset.skipped} invalid rows: {dataset.skip_reasons}")
    try:
        stats = do_replay(
            settings.kafka_bootstrap,
            settings.topic_events,
            settings.topic_items,
            dataset,
            rate=rate,
            limit=limit,
            producer_extra=dict(settings.kafka_security()),
        )
    except RuntimeError as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"sent {stats.items_sent} items and {stats.events_sent} events "
        f"in {stats.seconds:.1f}s ({stats.events_per_s:,.0f} events/s)"
    )


@app.command()
def train(
    path: Annotated[
        Path | None, typer.Argument(help="Dataset (default: the bundled MovieLens).")
    ] = None,
    fmt: Annotated[Literal["auto", "movielens", "yoochoose"], typer.Option("--format")] = "auto",
    out: Annotated[
        Path | None, typer.Option(help="Artefact directory (default: EDDY_MODEL_DIR).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same model).")] = 0,
) -> None:
    """Pre-train popularity, item vectors, the content model, the item-item model and the
    sequential rules; save a versioned artefact."""
    from rich.progress import Progress

    from models.artefact import save
    from models.datasets import BUNDLED_MOVIELENS, load_dataset
    from models.training import TrainConfig
    from models.training import train as fit

    settings = _settings()
    source = path or BUNDLED_MOVIELENS
    try:
        dataset = load_dataset(source, fmt)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {source}: {exc}") from exc
    with Progress(console=err, transient=True) as progress:
        tasks: dict[str, object] = {}

        def report(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=1.0)
            progress.update(tasks[stage], completed=fraction)  # type: ignore[arg-type]

        artefact = fit(dataset, TrainConfig(seed=seed), report)
    manifest = save(artefact, out or settings.model_dir)
    item_item = artefact.item_item
    pruned = "" if item_item is None else f", {item_item.weights.nnz:,} item-item weights"
    console.print(
        f"trained {artefact.version} on {dataset.name}: {len(artefact)} items, "
        f"dim {artefact.dim}{pruned}; saved {manifest}"
    )


@app.command()
def recommend(
    user: Annotated[str, typer.Argument(help="User id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw document.")] = False,
) -> None:
    """Print a user's current list with titles and reasons (popular list if unknown)."""
    import redis

    from streams.reader import connect, item_titles, read_list

    settings = _settings()
    client = connect(settings)
    try:
        lookup = read_list(client, settings, user)
        recs = lookup.recs
        titles = item_titles(client, settings, [i.item_id for i in recs.items]) if recs else {}
    except redis.RedisError as exc:
        raise _fail(f"cannot read Redis: {exc}; is the stack up (`eddy dev status`)?") from exc
    if recs is None:
        raise _fail("no list for this user and no popular list yet: is a worker running?")
    if as_json:
        console.print_json(recs.model_dump_json())
        return
    if lookup.fallback:
        console.print(f"[yellow]no list for user {user}: showing the popular list[/]")
    console.print(render_list(recs.items, titles, f"Recommendations for {user}"))


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="How many real users to show.")] = 3,
) -> None:
    """Run the end-to-end demo on the embedded stack with the bundled MovieLens data."""
    from streams.cli.demo import run_demo

    raise typer.Exit(code=run_demo(console, n_users=users))


@app.command()
def bench(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results to this JSON file.")
    ] = None,
    events: Annotated[
        int | None, typer.Option(min=1, help="Events of the bulk MovieLens row [10,000].")
    ] = None,
    live_events: Annotated[
        int | None, typer.Option(min=1, help="Events of the live-mix row [20,000].")
    ] = None,
    live_users: Annotated[
        int | None, typer.Option(min=1, help="Users of the live mix, taking turns [20,000].")
    ] = None,
    two_worker_events: Annotated[
        int | None, typer.Option(min=1, help="Events of the two-worker run [5,000].")
    ] = None,
    freshness_rate: Annotated[
        float | None,
        typer.Option(min=1, help="Events/s of the freshness run (default: half the live rate)."),
    ] = None,
    freshness_seconds: Annotated[
        float | None, typer.Option(min=1, help="Length of the freshness run [15 s].")
    ] = None,
    ranking_sizes: Annotated[
        str | None,
        typer.Option(help="Synthetic catalogues ranked besides MovieLens [100000,1000000]."),
    ] = None,
    ranking_lists: Annotated[
        str | None, typer.Option(help="Lists per ranking batch, comma-separated [1,50,500].")
    ] = None,
    retrieval_sizes: Annotated[
        str | None,
        typer.Option(help="Retrieval catalogue sizes, comma-separated [10000,100000,1000000]."),
    ] = None,
    broker: Annotated[
        devstack.Broker | None, typer.Option(help="noida (embedded, default) or kafka (Java).")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smoke run: small sizes, about a minute.")
    ] = False,
) -> None:
    """Measure the worker against a bare Faust agent, freshness, messages per event,
    ranking CPU and event-loop stalls against the targets."""
    from streams.cli.bench import main as run_bench
    from streams.cli.bench import make_config

    try:
        config = make_config(
            quick,
            events=events,
            live_events=live_events,
            live_users=live_users,
            two_worker_events=two_worker_events,
            freshness_rate=freshness_rate,
            freshness_s=freshness_seconds,
            ranking_sizes=ranking_sizes,
            ranking_lists=ranking_lists,
            retrieval_sizes=retrieval_sizes,
            broker=broker,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    raise typer.Exit(code=run_bench(console, config, json_path))


@dev.command("up")
def dev_up(
    broker: Annotated[
        devstack.Broker, typer.Option(help="noida (embedded) or kafka (Apache Kafka, java)")
    ] = "noida",
) -> None:
    """Start the broker and redis-server on free ports; record them in .eddy/dev.env."""
    state = _settings().state_dir
    try:
        stack = devstack.up(state, broker)
    except devstack.StackError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"kafka  {stack.kafka_bootstrap}  (pid {stack.kafka_pid})")
    console.print(f"redis  {stack.redis_url}  (pid {stack.redis_pid})")
    console.print(f"settings written to {devstack.env_file(state)}")


@dev.command("down")
def dev_down() -> None:
    """Stop the recorded dev stack and delete its data."""
    stack = devstack.down(_settings().state_dir)
    console.print("stopped" if stack else "no dev stack recorded")


@dev.command("status")
def dev_status() -> None:
    """Show whether the recorded dev stack is running."""
    info = devstack.status(_settings().state_dir)
    console.print_json(json.dumps(info))
    if not info["running"]:
        raise typer.Exit(code=1)


app.command("evaluate")(evaluate_command)
app.command("forget")(forget_command)


@app.command()
def soak(
    minutes: Annotated[float, typer.Option(min=0.1, help="How long the load runs.")] = 30.0,
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second; 0: half the measured maximum.")
    ] = 0.0,
    users: Annotated[
        int, typer.Option(min=0, help="Distinct users to reach by the end (some preloaded).")
    ] = 1_000_000,
    new_user_p: Annotated[
        float, typer.Option(min=0, max=1, help="Probability that an event brings a new user.")
    ] = 0.7,
    max_rate_events: Annotated[
        int, typer.Option(min=1000, help="Backlog that measures the maximum rate.")
    ] = 100_000,
    burst_every: Annotated[
        float, typer.Option(min=0, help="Seconds between bursts; 0: no bursts.")
    ] = 300.0,
    burst_s: Annotated[float, typer.Option(min=0, help="How long each burst lasts.")] = 20.0,
    burst_factor: Annotated[float, typer.Option(min=1, help="Burst rate ÷ soak rate.")] = 3.0,
    broker: Annotated[
        str, typer.Option(help="noida (noida-db, default) or kafka (Apache Kafka).")
    ] = "noida",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Sustained load on the embedded stack: worker RSS, lag after bursts, exact counts."""
    from infra.devstack import BROKERS
    from streams.cli.soak import SoakConfig, run_soak

    if broker not in BROKERS:
        raise typer.BadParameter(f"one of {', '.join(BROKERS)}", param_hint="--broker")
    cfg = SoakConfig(
        minutes=minutes,
        rate=rate,
        users=users,
        new_user_p=new_user_p,
        max_rate_events=max_rate_events,
        burst_every_s=burst_every,
        burst_s=burst_s,
        burst_factor=burst_factor,
        broker="kafka" if broker == "kafka" else "noida",
    )
    raise typer.Exit(code=run_soak(console, cfg, json_path))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
