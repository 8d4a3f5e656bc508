"""The README keeps its promises: two quick-start commands, every setting documented."""

from __future__ import annotations

import re
from pathlib import Path

from streams.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_quick_start_has_exactly_the_demo_and_test_commands() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_configuration_table_lists_every_setting() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(EDDY_[A-Z_]+)` \|", section, re.M))
    expected = {f"EDDY_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_ci_runs_the_readme_test_command() -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "make test" in ci
