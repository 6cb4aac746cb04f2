"""Start-up of the commands a user types, start to exit, against the eager command line.

Each command runs as its own process, `repeats` times, interleaved with its baseline: the same
command with every command module imported first (`newsletter.cli.load_all()`), which is how
the command line started before `cli/index.py`. Also the floor: a Python that imports nothing.

    .venv/bin/python bench/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine

OURS = "import sys; from newsletter.cli import main; sys.argv[0] = 'newsletter'; main()"
EAGER = (
    "import sys; from newsletter.cli import load_all, main; load_all(); "
    "sys.argv[0] = 'newsletter'; main()"
)


def seconds(code: str, args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seconds(OURS, ["init"], folder)
        commands = [["--help"], ["--version"], ["embassies", "list", "--json"], ["issue", "list"]]
        print(f"machine: {machine()}")
        print(f"median of {args.repeats} runs, seconds, start to exit")
        floor = statistics.median(seconds("pass", [], folder) for _ in range(args.repeats))
        print(f"{'python -c pass':<28} {floor:6.3f}")
        print(f"{'command':<28} {'ours':>6} {'eager':>6} {'ratio':>6}")
        for command in commands:
            ours, eager = [], []
            for _ in range(args.repeats):
                ours.append(seconds(OURS, command, folder))
                eager.append(seconds(EAGER, command, folder))
            a, b = statistics.median(ours), statistics.median(eager)
            print(f"{' '.join(command):<28} {a:6.3f} {b:6.3f} {b / a:5.1f}x", flush=True)


if __name__ == "__main__":
    main()
