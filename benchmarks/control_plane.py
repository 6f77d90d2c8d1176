"""Benchmark: the control plane's latencies on the sandbox.

- trigger → running and trigger → completed of `verify/sandbox` (or `--flow
  preflight`), with the worker
  polling every 1 s (ours) and every 10 s (Prefect's default), from the server's own
  timestamps (created, start_time, end_time), so polling here adds nothing;
- one preflight as people run it, whole process: `smartrelease preflight` in process
  against the server, and `smartrelease trigger preflight --wait` through the
  deployment and the worker;
- lock hand-off: this process holds the sandbox's lock while a verify triggered with
  wait=true waits for it; the time from this process letting go to the verify run
  writing its name as the holder.

usage: python benchmarks/control_plane.py [--runs 5] [--flow verify] [--out docs/benchmarks-control-plane.md]
Needs `make demo` (or `smartrelease sandbox up --server` and a release) first; the sandbox's worker is replaced by
one polling every 10 s for the second series, then started again.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import temporary_settings

from smartrelease.deployments import server
from smartrelease.deployments.apply import worker_command
from smartrelease.deployments.trigger import follow, succeeded, trigger
from smartrelease.record.lock import environment_lock, holder, me
from smartrelease.sandbox import manager, plane
from smartrelease.daemon import Background

ENV = "sandbox"


def _ms(seconds: float) -> float:
    return seconds * 1000


def trigger_latencies(flow: str, runs: int) -> tuple[list[float], list[float], list[float]]:
    """(trigger → picked up by the worker (Pending), → running, → completed) in ms,
    from the server's timestamps."""
    to_pending, to_running, to_done = [], [], []
    for _ in range(runs):
        started = trigger(flow, ENV, {})
        run = follow(started.flow_run_id, timeout_s=300)
        assert succeeded(run), f"{flow} run {run.id}: {run.state}"
        with get_client(sync_client=True) as client:
            pending = next(s for s in client.read_flow_run_states(run.id) if s.type.value == "PENDING")
        to_pending.append(_ms((pending.timestamp - run.created).total_seconds()))
        to_running.append(_ms((run.start_time - run.created).total_seconds()))
        to_done.append(_ms((run.end_time - run.created).total_seconds()))
    return to_pending, to_running, to_done


def with_worker(p: plane.Plane, flow: str, poll_s: int, runs: int) -> tuple[list[float], list[float], list[float]]:
    """The series with a worker polling every `poll_s` s in place of the sandbox's."""
    p.worker(ENV).stop()
    worker = Background(p.root / "workers" / f"bench-{poll_s}s.pid", p.root / "workers" / f"bench-{poll_s}s.log")
    command = worker_command(ENV)
    env = {**command.env, "PREFECT_WORKER_QUERY_SECONDS": str(poll_s)}
    worker.start(list(command.argv), env=env, cwd=command.cwd)
    try:
        time.sleep(15)  # started and polling
        trigger_latencies(flow, 1)  # warm-up
        return trigger_latencies(flow, runs)
    finally:
        worker.stop()
        plane.start_worker(p, ENV)


def whole_process(argv: list[str], runs: int) -> list[float]:
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True)
        if i:  # the first is a warm-up
            times.append(_ms(time.perf_counter() - t0))
        assert out.returncode == 0, out.stderr[-2000:]
    return times


def lock_handoffs(runs: int) -> list[float]:
    handoffs = []
    for _ in range(runs):
        with environment_lock(ENV, me("the benchmark")):
            started = trigger("verify", ENV, {"wait": True})
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the run is up and waiting for the lock
                with get_client(sync_client=True) as client:
                    if (state := client.read_flow_run(started.flow_run_id).state) and state.is_running():
                        break
                time.sleep(0.2)
            time.sleep(3)
            let_go = time.perf_counter()
        while (h := holder(ENV)) is None or h.flow_run_id != str(started.flow_run_id):
            time.sleep(0.02)
        handoffs.append(_ms(time.perf_counter() - let_go))
        assert succeeded(follow(started.flow_run_id, timeout_s=300))
    return handoffs


def row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--flow", choices=("verify", "preflight"), default="verify")
    ap.add_argument("--out", default="docs/benchmarks-control-plane.md")
    args = ap.parse_args()

    s = manager.Settings()
    p = s.plane()
    os.environ.update(server.client_environment(p.server))
    with temporary_settings(updates=server.client_settings(p.server)):
        fast = with_worker(p, args.flow, 1, args.runs)
        slow = with_worker(p, args.flow, 10, args.runs)
        cli = [str(Path(sys.executable).with_name("smartrelease"))]
        in_process = whole_process([*cli, "preflight", "--env-file", str(s.env_file)], args.runs)
        through = whole_process([*cli, "trigger", "preflight", "--env", ENV, "--wait"], args.runs)
        handoffs = lock_handoffs(args.runs)

    text = f"""# Benchmarks: the control plane

Command: `python benchmarks/control_plane.py --runs {args.runs} --flow {args.flow}` after `make demo`
(the Prefect server on PostgreSQL, the sandbox's deployments, a process worker, a release to verify).
Machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, measured {datetime.now(timezone.utc):%Y-%m-%d}.
The machine is shared: read these as orders of magnitude, not limits. Each series
after one warm-up run.

| | median ms | min ms | max ms |
|---|---:|---:|---:|
{row(f"{args.flow}/sandbox: trigger → picked up by the worker, polling every 1 s", fast[0])}
{row(f"{args.flow}/sandbox: trigger → running, worker polling every 1 s", fast[1])}
{row(f"{args.flow}/sandbox: trigger → completed, worker polling every 1 s", fast[2])}
{row(f"{args.flow}/sandbox: trigger → picked up by the worker, polling every 10 s (Prefect's default)", slow[0])}
{row(f"{args.flow}/sandbox: trigger → running, worker polling every 10 s", slow[1])}
{row(f"{args.flow}/sandbox: trigger → completed, worker polling every 10 s", slow[2])}
{row("`smartrelease preflight --env-file .env.sandbox` (in process), whole process", in_process)}
{row("`smartrelease trigger preflight --env sandbox --wait` (worker), whole process", through)}
{row("lock hand-off: holder lets go → the waiting verify run holds it", handoffs)}

The trigger figures are the server's own timestamps (the run's creation, its Pending
state, set when a worker takes it, its start and end), so this script's polling adds
nothing to them. From Pending to running is the worker starting the run as a new
Python process, which imports Prefect and the flows before the first task: that, not
the poll, is most of what a run through the worker costs over one run in process.
A run triggered between two polls waits for the next one: up to the poll interval,
half of it on average, which is why a 10 s poll is sometimes as quick as a 1 s one. The hand-off is bounded by the lock's poll
(`record/lock.py`, POLL_S, 1 s: the waiting run asks the server for the slot once per poll).
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
