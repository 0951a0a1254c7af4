"""CLI start-up: how long `llmkit --help`, `llmkit unlearn npo --help` and a usage error take as
whole processes, against a baseline measured in the same run (the same interpreter starting and
doing nothing, `python -c pass`), in paired rounds, medians.

    python benchmarks/bench_cli_start.py
    python benchmarks/bench_cli_start.py --repeats 21

Goal: each <= 1.0 s on a 2-core CPU. Parsing arguments and rendering help must not import torch,
transformers, datasets and the rest (torch alone takes over a second); commands import them when
they run. tests/test_cli.py checks that no heavy library is imported.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from _timing import paired

GOAL_S = 1.0
CASES = {
    "llmkit --help": (["--help"], 0),
    "llmkit unlearn npo --help": (["unlearn", "npo", "--help"], 0),
    "llmkit generate -m x (usage error)": (["generate", "-m", "x"], 2),
}


def llmkit_command() -> list[str]:
    """The installed `llmkit` script beside this interpreter (or on PATH), else the same entry point via -c."""
    script = Path(sys.executable).with_name("llmkit")
    if script.is_file():
        return [str(script)]
    found = shutil.which("llmkit")
    return (
        [found]
        if found
        else [sys.executable, "-c", "import sys; from llmkit.commands.cli import main; sys.exit(main())"]
    )


def run(command: list[str], expected: int | None = None) -> None:
    code = subprocess.run(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ).returncode
    if expected is not None and code != expected:
        raise SystemExit(f"{' '.join(command)} exited {code}, expected {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="paired rounds per command")
    args = parser.parse_args()

    llmkit = llmkit_command()
    baseline = [sys.executable, "-c", "pass"]
    print(f"llmkit: {' '.join(llmkit)}; baseline: {sys.executable} -c pass; {args.repeats} paired rounds, medians")
    print(f"\n{'command':38s} {'median':>9s} {'baseline':>9s} {'ratio':>7s}   goal <= {GOAL_S:.1f} s")
    for name, (arguments, code) in CASES.items():
        command = llmkit + arguments
        run(command, expected=code)
        base, t, ratio = paired(lambda: run(baseline), lambda: run(command), repeats=args.repeats)
        verdict = "ok" if t <= GOAL_S else "over"
        print(f"{name:38s} {t:7.3f} s {base:7.3f} s {ratio:6.1f}x   {verdict}")


if __name__ == "__main__":
    main()
