"""Benchmark: time to recover from a failed release, and what it is made of.

Each run releases the sandbox checkout's version, which must be a broken one whose
migration has a down step (after `make demo`: 1.2.0, already in the registry, so it
is deployed as pushed), and reads the report: the time from the failing step's end
to the previous version verified, and each rollback step's duration.

usage: PREFECT_SERVER_ANALYTICS_ENABLED=false python benchmarks/rollback.py [--env-file .env.sandbox] [--runs 5] [--out docs/benchmarks-rollback.md]
Needs `make demo` first (it leaves 1.1.0 running and the broken 1.2.0 checked out).
"""

import argparse
import platform
import statistics
from datetime import datetime, timezone

from smartrelease.record.lock import import_environment
from smartrelease.flows.release import release


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-file", default=".env.sandbox")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks-rollback.md")
    args = ap.parse_args()

    env = import_environment(args.env_file, "sandbox")
    recover, detect, steps = [], [], {}
    version = previous = None
    for _ in range(args.runs):
        report = release(environment=env.name, return_state=True).result(raise_on_failure=False)
        rb = report.facts.rollback
        if report.ok or rb is None or not rb.recovered:
            raise SystemExit(f"expected a failed release that rolls back; got:\n{report.text()}")
        version, previous = report.facts.version, rb.to_version
        recover.append(rb.time_to_recover_s * 1000)
        detect.append(report.failures()[0].duration_ms)  # launch, since the cutover judges the new containers
        for r in report.results:
            if r.name.startswith("rollback: "):
                steps.setdefault(r.name, []).append(r.duration_ms)

    rows = "\n".join(f"| `{name}` | {statistics.median(ms):.0f} | {max(ms):.0f} |" for name, ms in steps.items())
    text = f"""# Benchmarks: rollback

## Time to recover from a failed release

Command: `python benchmarks/rollback.py --runs {args.runs}` on the sandbox after `make demo`:
each run releases the broken {version} (a Sequelize migration with a down step, a
backend whose `/health` fails) over {previous}; it fails wait-ready and rolls back with
the default database strategy `undo`. The sandbox is the runbook's topology: the
database is PostgreSQL 17 in the Compose project (the safety backup is its own
pg_dump, streamed out through `docker compose exec` and encrypted on the host), and
the undo is the app's `npm run db:rollback` (sequelize-cli) in a one-off backend
container. Machine: {platform.machine()}, CPython
{platform.python_version()}, measured {datetime.now(timezone.utc):%Y-%m-%d}. The machine
is shared: read these as orders of magnitude, not limits.

| | median ms | max ms |
|---|---:|---:|
| the release's failing step (launch: the new backend judged unhealthy, the old one serving) | {statistics.median(detect):.0f} | {max(detect):.0f} |
| **time to recover**: failure detected → {previous} verified | {statistics.median(recover):.0f} | {max(recover):.0f} |
{rows}

Detection is the compose file's health check (every 2 s, unhealthy at the first
failure). The cutover asks the new backend `/ready` on its own address until it
answers 200; a health check that fails after that answer fails it at once
(tasks/probe.py). `RELEASE_UNHEALTHY_GRACE_S` ({env.target.unhealthy_grace_s:g} s here) is
only for a container that does not answer yet: a good backend still running its
migrations before it listens, on a loaded machine, can be unhealthy for a moment, and
failing it at once rolled a good release back. While the new version is being judged, the old
one goes on serving (the cutover, [benchmarks-cutover.md](benchmarks-cutover.md)), so
users do not see this time. Of the
recovery, three parts of about two seconds each make most of it: the undo (a one-off
container starting Node.js, npm and sequelize-cli), the relaunch (the database service
checked with `up --wait`, then the app's services), and the relaunched backend's
wait-ready (its entrypoint runs `npm run db:migrate` before it listens). The schema
comparison that catches a half-applied migration costs about 60 ms.
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
