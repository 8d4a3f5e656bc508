"""The price of exploring (``models.exploration``, ``eddy evaluate --explore``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.datasets import Dataset
from models.engine import EngineConfig
from models.evaluation import EvalConfig, evaluate
from models.events import Event, EventType, ItemUpsert
from models.exploration import ExploreConfig, explore
from models.training import TrainConfig
from streams.cli import app

T0 = 1_700_000_000.0
GROUPS = {"s": [f"s{n}" for n in range(1, 9)], "g": [f"g{n}" for n in range(1, 9)]}
ITEMS = [ItemUpsert(item_id=i, categories=("Books",)) for g in GROUPS.values() for i in g]
ENGINE = EngineConfig(train=TrainConfig(dim=8, content_holdout=0.0))


def dataset(n_users: int = 60) -> Dataset:
    """Odd users click space items, even users garden items: greedy lists are good."""
    events = [
        Event(type=EventType.CLICK, user_id=f"u{n}", item_id=item, ts=T0 + n * 10 + k)
        for n in range(n_users)
        for k, item in enumerate(GROUPS["s" if n % 2 else "g"])
    ]
    return Dataset("groups", ITEMS, events, 0, {})


XCFG = ExploreConfig(
    epsilons=(0.0, 0.2, 0.5), protected=(0, 1), logging_epsilon=0.3, draws=3, n_boot=200
)


def test_holdout_report_measures_and_estimates_the_price() -> None:
    cfg = EvalConfig(protocol="holdout-user", ks=(4,), fraction=0.4, engine=ENGINE)
    report = explore(dataset(), cfg, XCFG)
    assert report["users"] == 60
    assert report["rounds"] == 60 * XCFG.draws
    direct = report["direct"]
    assert direct["0.0"]["ndcg"] == report["greedy_ndcg"]
    assert direct["0.0"]["price"] == 0.0
    # greedy lists hold the user's own group; exploring swaps in the other group
    assert report["greedy_ndcg"] > 0.6
    assert direct["0.5"]["price_low"] > 0
    assert direct["0.5"]["price"] > direct["0.2"]["price"] > 0
    rows = {(r["epsilon"], r["protected"]): r for r in report["estimates"]}
    assert set(rows) == {(0.0, 0), (0.2, 0), (0.5, 0), (0.2, 1), (0.5, 1)}
    for (_, protected), row in rows.items():
        for name in ("ips", "snips", "dr"):
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]
        if protected == 0:  # the estimate from the logs agrees with the direct value
            assert row["dr_low"] - 0.05 <= row["direct_ndcg"] <= row["dr_high"] + 0.05
    # protecting the first slot gives back part of the price of exploring
    assert rows[(0.5, 1)]["dr"] > rows[(0.5, 0)]["dr"]
    assert rows[(0.5, 0)]["price_dr_low"] > 0


def test_protected_lists_can_be_measured_directly_too() -> None:
    cfg = EvalConfig(protocol="holdout-user", ks=(4,), fraction=0.4, engine=ENGINE)
    xcfg = replace(XCFG, epsilons=(0.0, 0.5), direct_protected=1)
    report = explore(dataset(), cfg, xcfg)
    rows = {(r["epsilon"], r["protected"]): r for r in report["estimates"]}
    assert "direct_ndcg" not in rows[(0.5, 0)]
    row = rows[(0.5, 1)]
    assert row["dr_low"] - 0.05 <= row["direct_ndcg"] <= row["dr_high"] + 0.05
    unprotected = explore(dataset(), cfg, replace(xcfg, direct_protected=0))["direct"]
    assert report["direct"]["0.5"]["price"] < unprotected["0.5"]["price"]
    prequential = replace(cfg, protocol="prequential")
    with pytest.raises(ValueError, match="holdout"):
        explore(dataset(), prequential, xcfg)


def test_prequential_report_scores_the_events_evaluate_scores() -> None:
    cfg = EvalConfig(
        protocol="prequential", ks=(3,), fraction=0.25, models=("eddy",), engine=ENGINE
    )
    report = explore(dataset(), cfg, ExploreConfig(epsilons=(0.0, 0.1), protected=(0,)))
    assert report["rounds"] == evaluate(dataset(), cfg)["eddy"]["events"]
    assert report["users"] <= report["rounds"]


def test_explore_config_is_checked() -> None:
    with pytest.raises(ValueError, match="logging_epsilon"):
        ExploreConfig(logging_epsilon=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        ExploreConfig(epsilons=(1.5,))


def test_cli_prints_and_writes_the_price_of_exploring(tmp_path: Path) -> None:
    rows = ["user,item,when"] + [f"{e.user_id},{e.item_id},{e.ts}" for e in dataset(30).events]
    data = tmp_path / "clicks.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "results.json"
    args = ["evaluate", str(data), "--user-col", "user", "--item-col", "item"]
    args += ["--time-col", "when", "--models", "eddy", "--k", "3", "--json", str(out)]
    args += ["--explore", "--explore-epsilons", "0,0.1", "--explore-protected", "0,1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())["explore"]
    assert set(doc["direct"]) == {"0.0", "0.1"}
    assert [(r["epsilon"], r["protected"]) for r in doc["estimates"]] == [
        (0.0, 0),
        (0.1, 0),
        (0.1, 1),
    ]
    assert "price of exploring" in result.output
    assert "DR price" in result.output
