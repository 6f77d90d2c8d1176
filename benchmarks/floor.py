"""Benchmark: Prefect's floor under every command (issue 33, measure first): where
the time of an empty flow run goes, whole process, against a running server.

- imports, each in a fresh process: `import prefect`, and the modules a command or a
  worker's run imports (`smartrelease.flows.preflight`, `smartrelease.flows.release`);
- an empty flow run, whole process, split by timestamps the process writes itself:
  interpreter and imports, the run until its body starts, the body's end until the
  run returns, the exit handlers (Prefect sends its queued events and logs) and the
  interpreter's teardown, also as the smartrelease command ends (gc.freeze());
  the server's own timestamps of the run (created, start, end) beside them;
- where the in-process part goes: cProfile of the run after the imports, its top
  entries by cumulative time.

usage: python benchmarks/floor.py [--runs 7] [--out docs/benchmarks-floor.md]
Starts a Prefect server of its own (on a PostgreSQL cluster of its own, ports free
on this host) and removes it after; needs nothing else.
"""

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from smartrelease.deployments import server

EMPTY_RUN = r"""
import atexit, gc, json, sys, time
t0 = float(sys.argv[1])
t_start = time.time()
# Registered first, so run last: the exit handlers (Prefect's included) are done.
atexit.register(lambda: print(json.dumps({"handlers_done": time.time()}), flush=True))
import prefect
from prefect import flow
t_imported = time.time()
marks = {}

@flow(name="empty")
def empty():
    marks["body"] = time.time()

state = empty(return_state=True)
t_returned = time.time()
print(json.dumps({"spawned": t0, "start": t_start, "imported": t_imported, "body": marks["body"],
                  "returned": t_returned, "flow_run_id": str(state.state_details.flow_run_id)}), flush=True)
if sys.argv[2] == "freeze":  # as the smartrelease command ends (smartrelease/cli.py, entry)
    gc.freeze()
"""

PROFILE_RUN = r"""
import cProfile, io, pstats, sys
import prefect
from prefect import flow

@flow(name="empty-profiled")
def empty():
    pass

empty()  # the first run in a process pays for what is set up once
profile = cProfile.Profile()
profile.enable()
empty()
profile.disable()
out = io.StringIO()
pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
print(out.getvalue())
"""


HEARTBEAT_RUNS = r"""
import json, sys, time
from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

@flow(name="empty-heartbeat")
def empty():
    pass

empty()  # the first run in a process pays for what is set up once
walls = {}
for label, changes in (("180 s (Prefect's default)", {}), ("none", {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})):
    walls[label] = []
    for _ in range(int(sys.argv[1])):
        with temporary_settings(changes):
            started = time.perf_counter()
            empty()
            walls[label].append(time.perf_counter() - started)
print(json.dumps(walls))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}"


def import_time(module: str, env: dict, runs: int) -> list[float]:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True)
        walls.append(time.perf_counter() - started)
    return walls


def empty_runs(env: dict, runs: int, end: str = "") -> list[dict]:
    """Each run: the process's own timestamps, its exit, and the server's. `end`:
    "freeze" to end as the smartrelease command does."""
    from prefect.client.orchestration import get_client

    found = []
    for _ in range(runs):
        spawned = time.time()
        out = subprocess.run([sys.executable, "-c", EMPTY_RUN, str(spawned), end], env=env, check=True,
                             capture_output=True, text=True).stdout
        exited = time.time()
        marks = {}
        for line in out.strip().splitlines()[-2:]:
            marks |= json.loads(line)
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(marks["flow_run_id"])
        marks |= {"exited": exited, "created": run.created.timestamp(), "server_start": run.start_time.timestamp(),
                  "server_end": run.end_time.timestamp()}
        found.append(marks)
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", default="docs/benchmarks-floor.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartrelease-floor-") as tmp:
        settings = server.ServerSettings(state_dir=Path(tmp) / "server", host="127.0.0.1", port=free_port(),
                                         pg_port=free_port(), database_url=None)
        server.up(settings)
        try:
            env = {**os.environ, **server.client_environment(settings), "PREFECT_LOGGING_LEVEL": "WARNING"}
            os.environ.update(server.client_environment(settings))
            imports = {m: import_time(m, env, args.runs) for m in (
                "prefect", "smartrelease.flows.preflight", "smartrelease.flows.release")}
            runs = empty_runs(env, args.runs)
            frozen = empty_runs(env, args.runs, "freeze")
            profile = subprocess.run([sys.executable, "-c", PROFILE_RUN], env=env, check=True, capture_output=True,
                                     text=True).stdout
            heartbeat = json.loads(subprocess.run([sys.executable, "-c", HEARTBEAT_RUNS, str(args.runs)], env=env,
                                                  check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        finally:
            server.down(settings)
            server.destroy_database(settings)

    def phase(a: str, b: str, of: list[dict] = runs) -> str:
        return median_ms([r[b] - r[a] for r in of])

    rows = "\n".join(f"| `import {m}` | {median_ms(w)} |" for m, w in imports.items())
    beats = "\n".join(f"  | {label} | {median_ms(w)} | {max(w) * 1000:.0f} |" for label, w in heartbeat.items())
    text = f"""# Prefect's floor: where an empty flow run's time goes

Command: `python benchmarks/floor.py --runs {args.runs}` (a Prefect server of its own, on
PostgreSQL, on this host). Machine: {os.cpu_count()} cores, {platform.python_implementation()}
{platform.python_version()}, measured {datetime.now(timezone.utc):%Y-%m-%d}. Medians of {args.runs}, in ms.

## Imports, each in a fresh process

| what | ms |
|---|---:|
{rows}

## An empty flow run, whole process

| phase | ms |
|---|---:|
| interpreter start (spawn to the script's first line) | {phase("spawned", "start")} |
| `import prefect` | {phase("start", "imported")} |
| the run, from the call to its body | {phase("imported", "body")} |
| the run, from its body's end to its return | {phase("body", "returned")} |
| exit handlers (Prefect sends what it queued: events, logs) | {phase("returned", "handlers_done")} |
| the interpreter's teardown (Python collects the objects the imports made) | {phase("handlers_done", "exited")} |
| **whole process** | **{phase("spawned", "exited")}** |

Ended as the `smartrelease` command ends (`gc.freeze()` after the run, so that the
teardown leaves those objects to the process's end; smartrelease/cli.py, `entry`):
teardown {phase("handlers_done", "exited", frozen)} ms, exit handlers
{phase("returned", "handlers_done", frozen)} ms, whole process {phase("spawned", "exited", frozen)} ms.

The server's timestamps of the same runs: created to start {phase("created", "server_start")} ms,
start to end {phase("server_start", "server_end")} ms; the process asked for the run
{phase("imported", "created")} ms after its imports.

## Reading it

- The second of "from its body's end to its return" is Prefect's flow-run heartbeat,
  not the server: the server holds the run for {phase("server_start", "server_end")} ms. Prefect 3.9 starts a
  heartbeat thread for every flow run (`flows.heartbeat_frequency`, 180 s by default)
  that sleeps in steps of 1 s, and the run's end joins it
  (`prefect/flow_engine.py`, `_send_heartbeats`: `thread.join(timeout=2)`): up to
  1 s per run, nearly all of it for a run shorter than a second (the profile below:
  `_wait_for_tstate_lock` under `_send_heartbeats`). The same empty run in process,
  after a first one, with the setting as it is and set to none (no thread, no join):

  | heartbeat | median ms | max ms |
  |---|---:|---:|
{beats}

  The environment cannot turn it off: `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` takes an
  integer of 30 or more (an empty value, `null` or `None` fail its parsing); none is
  a Prefect setting given in code (`temporary_settings`). Heartbeats feed an
  automation, if one was made, that marks a run whose process died as crashed
  (Prefect's "detect zombie flows"; this project makes none); the lock has heartbeats
  of its own (record/lock.py). Decided (issue 33): a command's run
  (`smartrelease preflight`, `release`, ...) goes without it, as its terminal watches
  it (`adapters/prefect_api.without_flow_heartbeat`); a run on a worker keeps it.
- `import prefect` is most of the rest; the project's flow modules add
  {median_ms([b - a for a, b in zip(imports["prefect"], imports["smartrelease.flows.release"])])} ms to it (`smartrelease.flows.release`).
- The API calls of the run itself (create, set running, set completed) are tens of ms.

## In process: the second empty run, by cumulative time (cProfile)

```
{profile.strip()[:6000]}
```
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
