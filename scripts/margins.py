"""Tabulate the trained outcomes the tests recorded (the `bound` fixture in tests/conftest.py)
across several JUnit reports, one per run, e.g. one per CPU capability: each measured value, its
bound, and the worst margin over the runs. `make test-machines` writes the reports and calls it.

    python scripts/margins.py build/machines/*.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def recorded(report: Path) -> dict[tuple[str, str], dict]:
    """(test id, outcome name) -> {"value", "op", "bound"} for one JUnit report."""
    found = {}
    for case in ET.parse(report).iter("testcase"):
        for prop in case.iter("property"):
            found[(f"{case.get('classname')}::{case.get('name')}", prop.get("name"))] = json.loads(prop.get("value"))
    return found


def margin(entry: dict) -> float:
    """How far the value is inside its bound, in the value's own units (negative: violated)."""
    return entry["value"] - entry["bound"] if entry["op"].startswith(">") else entry["bound"] - entry["value"]


def main(paths: list[str]) -> None:
    runs = {Path(p).stem: recorded(Path(p)) for p in paths}
    keys = sorted({key for found in runs.values() for key in found})
    print("| test | outcome | bound | " + " | ".join(runs) + " | worst margin |")
    print("|---|---|---|" + "---|" * len(runs) + "---|")
    for key in keys:
        entries = [found.get(key) for found in runs.values()]
        first = next(e for e in entries if e)
        values = ["-" if e is None else f"{e['value']:.3f}" for e in entries]
        worst = min(margin(e) for e in entries if e)
        print(
            f"| {key[0]} | {key[1]} | {first['op']} {first['bound']:g} | " + " | ".join(values) + f" | {worst:+.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
