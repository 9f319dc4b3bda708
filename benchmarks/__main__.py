"""Run the benchmarks and print every table as Markdown:
``python -m benchmarks [--quick] [--only core,live,external,widget]``.

Benchmarks are not tests: a missed goal is reported (MISS), not an error. The exit
status is 1 only when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Protocol

from .common import Settings, Table, machine_info

SUITES = {"core": "bench_core", "live": "bench_live", "external": "bench_external",
          "widget": "bench_widget", "scale": "bench_scale",
          "faults": "bench_faults",
          "tenants": "bench_tenants",
          "soak": "bench_soak", "model": "bench_model"}
#: What a bare ``python -m benchmarks`` runs: the long multi-process suites are asked for.
DEFAULT = [name for name in SUITES if name not in ("scale", "soak", "model")]


class _Suite(Protocol):
    def run(self, settings: Settings) -> Iterator[Table]: ...


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions: the whole run in about a minute")
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated subset of: {', '.join(SUITES)} "
                             f"(default: {', '.join(DEFAULT)}; scale and soak take minutes)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="soak: how long to run (default 10; with --quick 1)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown or not chosen:
        parser.error(f"--only takes {', '.join(SUITES)}; got {args.only!r}")
    args.suites = chosen
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    settings = Settings(quick=args.quick)
    if args.minutes is not None:
        importlib.import_module(".bench_soak", __package__).configure(args.minutes)
    print("## reactive_nb benchmarks\n")
    print(f"Command: `{shlex.join(['python', '-m', 'benchmarks', *argv])}`  ")
    print(f"Machine: {machine_info()}  ")
    print(f"Mode: {'quick (fewer repetitions, noisier)' if args.quick else 'full'}\n",
          flush=True)
    failed = []
    started = time.perf_counter()
    for name in args.suites:
        suite_started = time.perf_counter()
        try:
            suite: _Suite = importlib.import_module(f".{SUITES[name]}", __package__)
            for table in suite.run(settings):
                print(table.markdown(), flush=True)
        except Exception:
            failed.append(name)
            print(f"**{name}: the benchmark crashed**\n\n```\n{traceback.format_exc()}```\n",
                  flush=True)
        print(f"_{name}: {time.perf_counter() - suite_started:.1f} s_\n", flush=True)
    print(f"Total: {time.perf_counter() - started:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
