"""Time to build each embedded stream without the stream cache, with a cold cache and a warm one.

    python benchmarks/stream_cache.py [--repeats 3]

Each build is the stream's factory call, as `build(plan)` makes it, in a process that has already
imported torch, Avalanche and the libraries that render (so that import time, which a run pays
anyway, stays out). Before each build the process forgets the domains it built, as a new process
would: "uncached" is `CL_BENCH_CACHE=off` (what every run paid before the cache), "cold" builds
into an empty cache folder (building plus writing), "warm" reads what cold wrote. Medians of the
repeats; the three builds of one stream run back to back, so they see the same machine conditions.
Goal: warm <= 0.2 s per stream.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import avalanche.benchmarks  # noqa: E402, F401  # imported up front: a run has them loaded before it builds the stream
import matplotlib  # noqa: E402, F401
import PIL.ImageFont  # noqa: E402, F401
import sklearn.datasets  # noqa: E402, F401
import torch  # noqa: E402, F401

from cl_bench.config.registry import Registry  # noqa: E402
from cl_bench.contracts.specs import resolve_factory  # noqa: E402
from cl_bench.running.runner import quiet_third_party_warnings  # noqa: E402
from cl_bench.scenarios import embedded, packaged_data  # noqa: E402

STREAMS = ("embedded-mtil", "embedded-cil", "embedded-dil", "embedded-xtail")


def forget_built_domains() -> None:
    for memo in (embedded.fashion, embedded.digits, embedded.letters, embedded.symbols, embedded.printed_digits, embedded.rotated_digits):
        memo.cache_clear()
    for memo in (embedded._library_versions, embedded._code_sha256, packaged_data.font_sha256):
        memo.cache_clear()


def timed_build(factory, params, cache: str) -> float:
    os.environ["CL_BENCH_CACHE"] = cache
    forget_built_domains()
    began = time.perf_counter()
    factory(dict(params), None)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_third_party_warnings()
    warnings.filterwarnings("ignore")
    specs = Registry().scenarios()
    times: dict[str, dict[str, list[float]]] = {name: {"uncached": [], "cold": [], "warm": []} for name in STREAMS}
    with tempfile.TemporaryDirectory(prefix="cl_bench-stream-cache-") as scratch:
        for repeat in range(args.repeats):
            for name in STREAMS:
                spec = specs[name]
                factory, params = resolve_factory(spec.factory), spec.resolve({})
                folder = str(Path(scratch) / f"{repeat}-{name}")  # empty: a cold cache
                times[name]["uncached"].append(timed_build(factory, params, "off"))
                times[name]["cold"].append(timed_build(factory, params, folder))
                times[name]["warm"].append(timed_build(factory, params, folder))
    print(f"stream build time, median of {args.repeats} (torch threads: {torch.get_num_threads()})")
    print(f"{'stream':<16} {'uncached':>10} {'cold cache':>11} {'warm cache':>11} {'uncached / warm':>16}")
    for name, measured in times.items():
        uncached, cold, warm = (statistics.median(measured[k]) for k in ("uncached", "cold", "warm"))
        print(f"{name:<16} {uncached:>9.3f}s {cold:>10.3f}s {warm:>10.3f}s {uncached / warm:>15.1f}x")


if __name__ == "__main__":
    main()
