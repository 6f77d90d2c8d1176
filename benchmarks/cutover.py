"""Benchmark: requests dropped while a release, a broken release (and its automatic
rollback) and a standalone rollback run, across the edges and health checks teams
really have (sandbox/stacks.py's MATRIX), with the old stop-then-start path
(`--stop-first`) beside the first stack's cutover, in one run.

For the whole of each run, a fixed rate of requests (open loop) goes through the
sandbox's TLS edge: 80 % GET /api/accounts (reads the database), 20 % POST
/api/accounts (writes a row; no edge may send it twice: after each run, every write
answered 201 must have left exactly one row). In the `dns-pinned` stack every request
also passes through the frontend's nginx, which proxies /api to the backend. Steady
state is the same load with nothing running, on each stack. Each scenario ships a
new version of the stand-in checkout (the broken one crashes on start).

usage: PREFECT_SERVER_ANALYTICS_ENABLED=false python benchmarks/cutover.py [--env-file .env.sandbox] [--rate 100] [--nice 0] [--stacks a,b] [--no-stop-first] [--out docs/benchmarks-cutover.md]
Needs a sandbox up (`smartrelease sandbox up`) with RELEASE_APPROVAL=none; puts it
back on its own stack at the end.
"""

import argparse
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from smartrelease.record.lock import import_environment
from smartrelease.flows.rollback import rollback
from smartrelease.flows.release import release
from smartrelease.sandbox.app_changes import commit_version, migration
from smartrelease.sandbox.load import Load, Stats, Writes, check_writes
from smartrelease.sandbox.stacks import MATRIX, Stack, put
from smartrelease.tasks.build_pin import build_pin
from smartrelease.adapters.postgres import connect

PATH = "/api/accounts"
STEADY_S = 10
WRITES = 0.2  # of the rate


@dataclass(frozen=True)
class Window:
    reads: Stats
    writes: Stats
    rows: Writes  # what the rows show of the writes
    launch_s: float  # the launch step (relaunch, for a rollback)
    flow_s: float  # the flow's whole run; for a broken release, its time to recover
    outcome: str = ""
    undone: list | None = None  # the migrations a rollback undid


class Traffic:
    """The reads and the writes, each a Load of its own."""

    def __init__(self, env, rate: float, nice: int):
        self.env, self.rate, self.nice, self.n = env, rate, nice, 0

    def under(self, flow, expect_ok: bool | None = None, max_s: float = 900) -> Window:
        """`flow()`: a flow run (with return_state) to measure, or None for steady state."""
        self.n += 1
        tag = f"bench{int(time.time())}n{self.n}"
        url, ca = self.env.target.public_url + PATH, self.env.target.ca_bundle
        with Load(url, rate=self.rate * (1 - WRITES), ca=ca, nice=self.nice, max_s=max_s) as reads, \
                Load(url, rate=self.rate * WRITES, ca=ca, nice=self.nice, max_s=max_s, post_as=tag) as writes:
            time.sleep(1)  # the load is flowing before anything changes
            started = time.monotonic()
            state = flow(return_state=True) if expect_ok is not None else time.sleep(STEADY_S)
            report = state.result(raise_on_failure=False) if state else None
            ended = time.monotonic()
            time.sleep(1)
        with connect(self.env, "benchmark") as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM accounts WHERE name LIKE %s", (f"{tag}-%",))]
        steps = {r.name: r for r in report.results} if report else {}
        launch = steps.get("launch") or steps.get("relaunch") or steps.get("rollback: relaunch")
        rb = report.facts.rollback if report else None
        return Window(reads.stats(started, ended), writes.stats(started, ended), check_writes(writes.samples, names),
                      launch.duration_ms / 1000 if launch else 0.0,
                      rb.time_to_recover_s if rb and rb.time_to_recover_s else ended - started,
                      outcome(report, expect_ok) if report else "", rb.migrations_undone if rb else None)


def pushed(env, app_dir: str, version: str, files: dict | None = None, faults: list[str] | None = None) -> None:
    """Commit `version` and build and push it, so that the measured run deploys it as
    pushed (an image is built on a CI machine, not on the host that serves)."""
    commit_version(app_dir, version, files, faults)
    build_pin(env, version)


def outcome(report, expect_ok: bool) -> str:
    """What the flow did, in a word for the table; not what was expected is in bold."""
    if report.ok:
        said = "released" if report.facts.rollback is None else "ok"
    else:
        rb = report.facts.rollback
        said = "rolled back" if rb and rb.recovered else f"failed: {', '.join(r.name for r in report.failures())}"
    if report.ok == expect_ok and (report.ok or said == "rolled back"):
        return said
    first = report.failures()[0] if report.failures() else None
    return f"**{said}**" + (f" ({first.name}: {first.detail.splitlines()[0][:160]})" if first else "")


def scenarios(env, app_dir: str, traffic: Traffic, stop_first: bool, tag: str) -> dict[str, Window]:
    """(a base release, not measured) -> good release, adding a column (expand) ->
    broken release (rolled back) -> rollback to the base, undoing the column. An
    outcome not expected (a stack that drops the smoke checks' requests, say) is
    recorded, not fatal; the rollback is measured only after a good release."""
    out = {}
    base, good, broken = f"{tag}.0", f"{tag}.1", f"{tag}.2"
    column = "bench_memo_" + tag.replace(".", "_")  # its own: a run stopped halfway leaves its column behind
    memo = {f"migrations/{time.strftime('%Y%m%d%H%M%S')}-bench-memo.js": migration(
        f"ALTER TABLE accounts ADD COLUMN {column} TEXT", f"ALTER TABLE accounts DROP COLUMN {column}")}
    pushed(env, app_dir, base)
    if not (first := release(environment=env.name, return_state=True).result(raise_on_failure=False)).ok:
        raise SystemExit(f"the base release failed:\n{first.text()}")
    pushed(env, app_dir, good, memo)
    out["good release"] = traffic.under(partial(release, environment=env.name, stop_first=stop_first), True)
    pushed(env, app_dir, broken, faults=["crash-on-start"])
    out["broken release, rolled back"] = traffic.under(
        partial(release, environment=env.name, stop_first=stop_first), False)
    commit_version(app_dir, good)  # the checkout back on a good version
    if out["good release"].outcome == "released":
        out["rollback, undoing a migration"] = w = traffic.under(
            partial(rollback, environment=env.name, to_version=base, stop_first=stop_first), True)
        if w.outcome == "ok" and w.undone != [m.split("/")[1] for m in memo]:
            raise SystemExit(f"the rollback did not undo the memo migration: {w.undone}")
    commit_version(app_dir, good, {name: None for name in memo})  # later versions do not ship it
    return out


def steady_state(traffic: Traffic) -> Window:
    return traffic.under(None, max_s=STEADY_S + 30)


def row(stack: str, path: str, scenario: str, w: Window, steady: Window) -> str:
    ratio = w.reads.p99_ms / steady.reads.p99_ms if steady.reads.p99_ms else 0
    return (f"| {stack} | {path} | {scenario} | {w.outcome} | {w.reads.requests} | **{w.reads.failed}** | {w.reads.p99_ms:.0f} | "
            f"{ratio:.1f}x | {w.reads.max_ms:.0f} | {w.writes.requests} | **{w.writes.failed}** | "
            f"{w.rows.lost} / {w.rows.doubled} / {w.rows.unanswered} | {w.launch_s:.1f} | {w.flow_s:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-file", default=".env.sandbox")
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--out", default="docs/benchmarks-cutover.md")
    ap.add_argument("--stacks", default=",".join(MATRIX), help=f"of {', '.join(MATRIX)}")
    ap.add_argument("--no-stop-first", action="store_true", help="without stop-first beside the first stack's cutover")
    ap.add_argument("--nice", type=int, default=0,
                    help="the load generator's priority; below 0 (root) it is not kept waiting by the flows, "
                         "Docker and the app on the same cores, as users' own machines would not be")
    args = ap.parse_args()
    stacks = args.stacks.split(",")
    if unknown := [s for s in stacks if s not in MATRIX]:
        raise SystemExit(f"unknown stack(s) {', '.join(unknown)}: choose among {', '.join(MATRIX)}")

    env = import_environment(args.env_file, "sandbox")
    if env.target.approval_required:
        raise SystemExit("set RELEASE_APPROVAL=none in the env file first: nobody is there to approve")
    app_dir, compose_file = env.target.app_dir, Path(env.target.compose_file)
    original, env_file = compose_file.read_text(), Path(args.env_file)
    series = int(time.time()) % 100000
    rows, steadies = [], []
    try:
        for i, key in enumerate(stacks):
            put(MATRIX[key], compose_file, original, env_file, env.name)
            env = import_environment(env_file, env.name)
            traffic = Traffic(env, args.rate, args.nice)
            steady = steady_state(traffic)
            steadies.append(f"| {key} | {steady.reads.line()} | {steady.writes.failed} of {steady.writes.requests} |")
            print(f"{key:16} steady      {steady.reads.line()}", flush=True)
            for path, stop_first in (("cutover", False), ("stop-first", True))[:2 if i == 0 and not args.no_stop_first else 1]:
                tag = f"{40 + i}.{series}{int(stop_first)}"
                for scenario, w in scenarios(env, app_dir, traffic, stop_first, tag).items():
                    rows.append(row(key, path, scenario, w, steady))
                    print(f"{key:16} {path:11} {scenario:30} {w.outcome}; reads {w.reads.line()}; writes {w.writes.failed} failed "
                          f"of {w.writes.requests}, rows: {w.rows.line()}; launch {w.launch_s:.1f} s, "
                          f"flow {w.flow_s:.1f} s", flush=True)
    finally:
        put(Stack(), compose_file, original, env_file, env.name)

    stack_lines = "\n".join(f"| `{key}` | {MATRIX[key].name} |" for key in stacks)
    text = f"""# Benchmarks: requests dropped during a release, edge by edge

Command: `python benchmarks/cutover.py --rate {args.rate:g} --nice {args.nice} --stacks {args.stacks}{" --no-stop-first" if args.no_stop_first else ""}` on a
sandbox (`smartrelease sandbox up`, `RELEASE_APPROVAL=none`), which `sandbox/stacks.py`
puts on each stack in turn (its compose file and env file changed, its containers
recreated on the running version) and back on its own at the end.

A fixed rate of {args.rate:g} requests/s (open loop, answered or not) goes through the
TLS edge while each flow runs: {100 - WRITES * 100:.0f} % GET `{PATH}` (reads the database),
{WRITES * 100:.0f} % POST `{PATH}` (writes a row, which no edge may send twice). A request
fails when it gets no answer or a 5xx. The rows then tell, of the writes: lost (answered
201, no row), doubled (a row twice: sent twice) and unanswered (a row, but the
answer failed: the client could not know). In `dns-pinned` every request passes through the frontend's
nginx, which proxies /api to the backend it resolved at its start. Each version is
built and pushed before its run, as a CI machine would. Scenarios: a good release
(it adds a column), a broken release (its backend crashes on start) that rolls back
automatically, and a rollback to the release before the good one, which undoes its
migration. `launch s` is the launch step (the rollback's relaunch); `flow s` the
whole flow, and for the broken release its time to recover. Machine:
{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}, measured
{datetime.now(timezone.utc):%Y-%m-%d}. The load generator runs on the same machine as
Docker, the flows and the Prefect server, at nice {args.nice}
({"scheduled before them, as users' own machines would not wait for the server's cores" if args.nice < 0
  else "so its latencies include waiting for the machine's other work"}).

| stack | what it is |
|---|---|
{stack_lines}

Steady state ({STEADY_S} s, nothing running), per stack:

| stack | reads | writes failed |
|---|---|---|
{chr(10).join(steadies)}

| stack | path | scenario | outcome | reads | failed | p99 ms | p99 / steady | max ms | writes | failed | lost / doubled / unanswered | launch s | flow s |
|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|
{chr(10).join(rows)}
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
