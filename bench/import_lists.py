"""`newsletter subscribers import` of a generated list, start to exit, against the floor.

A fresh SQLite instance per run; the list is one mission's CSV of N rows (two sectors each). The
floor is the same rows written by one `executemany` of plain INSERTs into a table of the same
columns: no validation, no suppression check, no audit, no process start-up. The ratio says how
far the import is from writing the bytes.

    .venv/bin/python bench/import_lists.py [--rows 5000,20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine

SECTORS = ["ai", "big-data-cloud", "integrated-circuits", "biomedicine", "new-materials", "5g-iot"]
NEWSLETTER = Path(sys.executable).parent / "newsletter"


def write_list(path: Path, n: int) -> None:
    rng = random.Random(2020)
    lines = ["email,name,title,sectors,language"]
    lines += [
        f"reader{i}@de-berlin.example.org,李伟{i},参赞,{';'.join(rng.sample(SECTORS, 2))},zh"
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def ours(folder: Path, csv: Path) -> float:
    instance = folder / "instance"
    instance.mkdir()
    subprocess.run([str(NEWSLETTER), "init"], cwd=instance, check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run(
        [str(NEWSLETTER), "subscribers", "import", str(csv)], cwd=instance, check=True,
        capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def floor(folder: Path, csv: Path) -> float:
    started = time.perf_counter()
    rows = [line.split(",") for line in csv.read_text(encoding="utf-8").splitlines()[1:]]
    with sqlite3.connect(folder / "floor.db") as db:
        db.execute(
            "CREATE TABLE s (email TEXT UNIQUE, name TEXT, title TEXT, sectors TEXT, lang TEXT)"
        )
        db.executemany("INSERT INTO s VALUES (?, ?, ?, ?, ?)", rows)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="5000,20000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'rows':>8} {'ours s':>8} {'rows/s':>8} {'floor s':>8} {'rows/s':>9} {'ratio':>6}")
    for n in [int(r) for r in args.rows.split(",")]:
        times, floors = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                csv = folder / "de-berlin.csv"
                write_list(csv, n)
                times.append(ours(folder, csv))
                floors.append(floor(folder, csv))
        a, b = statistics.median(times), statistics.median(floors)
        print(
            f"{n:>8,} {a:>8.2f} {n / a:>8,.0f} {b:>8.3f} {n / b:>9,.0f} {a / b:>5.0f}x", flush=True
        )


if __name__ == "__main__":
    main()
