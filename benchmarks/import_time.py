"""Where a `clbench run`'s fixed cost goes: the import time of the libraries a run loads.

    python benchmarks/import_time.py [--method zeroshot] [--scenario embedded-mtil] [--top 12]

Runs `python -X importtime -m cl_bench run ...` once in a child process (a fresh interpreter, as a
user's `clbench run` is) into a temporary folder, then prints the run's wall time, the import
time of the heaviest packages (cumulative: a package's own modules and what they import first),
and the heaviest single modules by their own time. Import times overlap (torch counts inside
avalanche when avalanche imports it first), so the rows do not add up; the first row of each
top-level package is where its cost lands.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from tabulate import tabulate


def parse(lines: list[str]) -> list[tuple[int, str, int, int]]:
    """(depth, module, own microseconds, cumulative microseconds) for each `-X importtime` line."""
    rows = []
    for line in lines:
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        if not own.strip().isdigit():
            continue  # the header line
        stripped = name.rstrip("\n")
        rows.append(((len(stripped) - len(stripped.lstrip())) // 2, stripped.strip(), int(own), int(cumulative)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="zeroshot")
    parser.add_argument("--scenario", default="embedded-mtil")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-X", "importtime", "-m", "cl_bench", "run", "--method", args.method, "--scenario", args.scenario, "--out", out, "--quiet"]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
        wall = time.perf_counter() - began
    if done.returncode:
        sys.exit(f"the run failed:\n{done.stderr[-2000:]}")
    rows = parse(done.stderr.splitlines())
    packages: dict[str, int] = {}
    for _, name, _, cumulative in rows:  # a package's first (outermost) import carries its cost
        top = name.split(".")[0]
        packages[top] = max(packages.get(top, 0), cumulative)
    total = sum(cumulative for depth, _, _, cumulative in rows if depth == 0)
    print(f"clbench run --method {args.method} --scenario {args.scenario}: {wall:.1f} s wall, {total / 1e6:.1f} s of imports\n")
    heaviest = sorted(packages.items(), key=lambda item: -item[1])[: args.top]
    print(tabulate([(name, f"{us / 1e6:.2f}") for name, us in heaviest], headers=["package", "import s (cumulative)"]))
    print()
    own = sorted(rows, key=lambda row: -row[2])[: args.top]
    print(tabulate([(name, f"{us / 1e6:.2f}") for _, name, us, _ in own], headers=["module", "own s"]))


if __name__ == "__main__":
    main()
