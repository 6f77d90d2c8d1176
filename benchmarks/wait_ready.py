"""Benchmark: how soon wait-ready notices readiness once it is true.

Each run recreates the sandbox's backend container (same pinned image), then runs
wait_ready. Readiness becomes true when Docker's first passing health probe ends
(State.Health.Log; /ready answers 200 from the moment the server listens, before
that). The latency is from that instant to wait_ready returning.

usage: python benchmarks/wait_ready.py [--env-file .env.sandbox] [--runs 7] [--out docs/benchmarks-release.md]
Needs `smartrelease sandbox up` first (any version running).
"""

import argparse
import platform
import statistics
import time
from datetime import datetime, timezone

import docker

from smartrelease.blocks import parse_env_file
from smartrelease.process import run
from smartrelease.tasks.launch import project_compose
from smartrelease.tasks.readiness import POLL_CAP_S, wait_ready
from smartrelease.adapters.running import running_services


def first_healthy(container) -> float:
    """Epoch seconds at which the first passing health probe ended."""
    container.reload()
    probes = container.attrs["State"]["Health"]["Log"]
    end = next(p["End"] for p in probes if p["ExitCode"] == 0)
    # Docker writes nanoseconds; datetime takes microseconds.
    stamp, _, frac = end.partition(".")
    frac, _, zone = frac.partition("+") if "+" in frac else (frac.rstrip("Z"), "", "00:00")
    return datetime.fromisoformat(f"{stamp}.{frac[:6]}+{zone or '00:00'}").timestamp()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-file", default=".env.sandbox")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", default="docs/benchmarks-release.md")
    args = ap.parse_args()

    env = parse_env_file(args.env_file)
    client = docker.from_env()
    running = running_services(client, env)
    images = {s: running[s].digests[0] for s in ("backend", "frontend")}
    latencies, totals = [], []
    for _ in range(args.runs):
        run(project_compose(env, images).up([env.target.backend_service], no_deps=True, force_recreate=True))
        started = time.time()
        wait_ready(env)
        noticed = time.time()
        backend = client.containers.get(running_services(client, env)["backend"].id)
        latencies.append((noticed - first_healthy(backend)) * 1000)
        totals.append((noticed - started) * 1000)

    text = f"""# Benchmarks: release steps

## wait-ready: from ready to noticed

Command: `python benchmarks/wait_ready.py --runs {args.runs}` on the sandbox
(backend container recreated each run, same image). Machine: {platform.machine()},
CPython {platform.python_version()}, measured {datetime.now(timezone.utc):%Y-%m-%d}.
The machine is shared: read these as orders of magnitude, not limits.

| | median ms | max ms |
|---|---:|---:|
| first passing health probe ended → wait_ready returned | {statistics.median(latencies):.0f} | {max(latencies):.0f} |
| container recreated → wait_ready returned | {statistics.median(totals):.0f} | {max(totals):.0f} |

The poll starts at 50 ms and doubles up to {POLL_CAP_S * 1000:.0f} ms, so a state change
is seen within one capped interval plus the cost of one poll (list the project's
containers, inspect their images, GET /ready through the TLS edge). The second row
is the backend's own start (its entrypoint runs `npm run db:migrate` through
sequelize-cli before Node.js listens) and the image's health check interval (1 s):
Docker reports a container healthy only after its first passing probe.
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
