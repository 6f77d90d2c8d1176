"""Benchmark: wall time of the preflight flow against a running sandbox, and what
running the six checks concurrently saves over the sum of their durations.

usage: python benchmarks/preflight.py [--env-file .env.sandbox] [--runs 7] [--out docs/benchmarks.md]
Needs `smartrelease sandbox up` first. Writes the figures to the --out file.
"""

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone

from prefect import flow

from smartrelease.record.lock import import_environment
from smartrelease.flows.preflight import CHECKS, preflight


@flow
def empty_flow() -> None:
    """Baseline: what any flow run costs on this Prefect server."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-file", default=".env.sandbox")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", default="docs/benchmarks.md")
    args = ap.parse_args()

    env = import_environment(args.env_file)
    preflight(environment=env.name, return_state=True)  # warm-up: server, imports, connections
    walls, per_check = [], {name: [] for name in CHECKS}
    for _ in range(args.runs):
        t0 = time.perf_counter()
        report = preflight(environment=env.name, return_state=True).result(raise_on_failure=False)
        walls.append((time.perf_counter() - t0) * 1000)
        assert report.ok, report.text()
        for r in report.results:
            per_check[r.name].append(r.duration_ms)

    baseline = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        empty_flow()
        baseline.append((time.perf_counter() - t0) * 1000)

    med = {name: statistics.median(v) for name, v in per_check.items()}
    rows = "\n".join(f"| {name} | {med[name]:.0f} | {max(per_check[name]):.0f} |" for name in CHECKS)
    text = f"""# Benchmarks

## Preflight flow on the sandbox

Command: `python benchmarks/preflight.py --runs {args.runs}` after `smartrelease sandbox up`
(flow run in-process against a temporary local Prefect server, after one warm-up run).
Machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, measured {datetime.now(timezone.utc):%Y-%m-%d}.
The machine is shared: read these as orders of magnitude, not limits.

| | median ms | max ms |
|---|---:|---:|
| whole flow run (wall) | {statistics.median(walls):.0f} | {max(walls):.0f} |
| an empty flow run (Prefect's own cost) | {statistics.median(baseline):.0f} | {max(baseline):.0f} |
{rows}

Sum of the median check durations: {sum(med.values()):.0f} ms; the slowest check: {max(med.values()):.0f} ms.
A check's duration is measured from submission to completion, so it includes any
wait for a worker thread and any retry; the checks run concurrently, so the flow's
own share is its wall time less the slowest check. Most of the wall time is the
per-run cost of Prefect itself, which an empty flow shows: the medians differ by
{statistics.median(walls) - statistics.median(baseline):+.0f} ms, within this machine's noise.
"""
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
