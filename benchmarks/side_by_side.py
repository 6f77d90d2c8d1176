"""Benchmark: the flows side by side with the runbook done by hand
(benchmarks/runbook.sh), paired in one run, each a whole process as a person or CI
starts it, against the sandbox and a running Prefect server.

1. preflight: `smartrelease preflight --json` against `runbook.sh preflight`, in
   alternating order, `--runs` pairs;
2. release of a version already in the registry: `smartrelease release --version X
   --json` (backup check, plan, health-gated cutover, verify by digest) against
   `runbook.sh deploy` (`docker compose up -d`, curl until ready, smoke, jq). Two
   versions, A and B, take turns: each round the tool releases A then B, then bash
   deploys A then B, so each starts from the other version running.
3. a broken release and the way back: `smartrelease release --version BROKEN --json`
   (it fails and rolls itself back) against `runbook.sh deploy BROKEN` (it fails at
   its readiness timeout) followed by `runbook.sh rollback A` (`npm run db:rollback` in the
   running backend, then a deploy of A). BROKEN is A with a Sequelize migration (with
   its down step) and a backend whose /health fails. Time to detect: the tool's
   failing step; bash's failing deploy. Time to recover: the tool's report
   (detected → A verified); bash's rollback command.

Peak memory is the largest resident set of the process or of any program it ran (wait4's ru_maxrss).

usage: python benchmarks/side_by_side.py [--env-file .env.sandbox] [--runs 5] [--out docs/benchmarks-runbook.md]
Needs `smartrelease sandbox up`, RELEASE_APPROVAL=none in the env file, and
PREFECT_API_URL naming a running server (`smartrelease server up`).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "benchmarks" / "runbook.sh"
TOOL = [sys.executable, "-m", "smartrelease.cli"]


@dataclass
class Run:
    seconds: float
    peak_mb: float
    stdout: str


def timed(argv: list[str], expect_failure: bool = False) -> Run:
    """Run `argv` to its end; its wall time and peak memory. Fails loudly if it failed
    (or, with `expect_failure`, if it did not)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if (proc.returncode != 0) != expect_failure:
        sys.exit(f"{' '.join(argv[-4:])} failed (exit {proc.returncode}):\n{stderr[-2000:]}\n{stdout[-2000:]}")
    return Run(seconds, usage.ru_maxrss / 1024, stdout)


def median(runs: list[Run], attr: str = "seconds") -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def preflight_pairs(env_file: str, runs: int) -> tuple[list[Run], list[Run], list[float]]:
    tool, bash, slowest = [], [], []
    timed([*TOOL, "preflight", "--env-file", env_file, "--json"])  # warm-up: caches, the server's first queries
    for i in range(runs):
        order = [("tool", [*TOOL, "preflight", "--env-file", env_file, "--json"]),
                 ("bash", ["bash", str(RUNBOOK), "preflight", env_file])]
        for who, argv in (order if i % 2 == 0 else order[::-1]):
            run = timed(argv)
            (tool if who == "tool" else bash).append(run)
            if who == "tool":
                slowest.append(max(c["duration_ms"] for c in json.loads(run.stdout)["checks"]))
    return tool, bash, slowest


def release_rounds(env_file: str, runs: int, versions: tuple[str, str]) -> tuple[list[Run], list[Run]]:
    tool, bash = [], []
    for _ in range(runs):
        for version in versions:
            run = timed([*TOOL, "release", "--env-file", env_file, "--version", version, "--json"])
            assert json.loads(run.stdout)["ok"], run.stdout
            tool.append(run)
        for version in versions:
            bash.append(timed(["bash", str(RUNBOOK), "deploy", env_file, version]))
    return tool, bash


@dataclass
class Recovery:
    whole_s: float  # the failed release and the way back, both processes
    detect_s: float
    recover_s: float
    peak_mb: float


def recovery_rounds(env_file: str, runs: int, good: str, broken: str) -> tuple[list[Recovery], list[Recovery]]:
    tool, bash = [], []
    for _ in range(runs):
        run = timed([*TOOL, "release", "--env-file", env_file, "--version", broken, "--json"], expect_failure=True)
        report = json.loads(run.stdout)
        rb = report["rollback"]
        assert rb and rb["recovered"] and rb["to_version"] == good, run.stdout
        failing = next(step for step in report["steps"] if step["status"] == "failed")
        tool.append(Recovery(run.seconds, failing["duration_ms"] / 1000, rb["time_to_recover_s"], run.peak_mb))
        failed = timed(["bash", str(RUNBOOK), "deploy", env_file, broken], expect_failure=True)
        back = timed(["bash", str(RUNBOOK), "rollback", env_file, good])
        bash.append(Recovery(failed.seconds + back.seconds, failed.seconds, back.seconds,
                             max(failed.peak_mb, back.peak_mb)))
    return tool, bash


BROKEN_MIGRATION = "migrations/20991231000000-benchmark-broken.js"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-file", default=".env.sandbox")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks-runbook.md")
    args = ap.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("set PREFECT_API_URL to a running Prefect server (`smartrelease server up`): without one, every "
                 "command starts a temporary server of its own, which is not what is measured here")
    env_file = str(Path(args.env_file).resolve())

    from smartrelease.sandbox import manager
    from smartrelease.sandbox.app_changes import commit_version

    app_dir = manager.Settings().app_dir
    first = (app_dir / "VERSION").read_text().strip()
    second = "9.9.0"
    commit_version(app_dir, second)
    print(f"setup: releasing {second} once (builds and pushes it; not timed)", flush=True)
    timed([*TOOL, "release", "--env-file", env_file, "--version", second, "--json"])

    print(f"preflight: {args.runs} pairs", flush=True)
    pre_tool, pre_bash, slowest = preflight_pairs(env_file, args.runs)
    print(f"release: {args.runs} rounds of {first} and {second}, each way", flush=True)
    rel_tool, rel_bash = release_rounds(env_file, args.runs, (first, second))

    from smartrelease.sandbox.app_changes import migration

    broken = "9.9.1"
    commit_version(app_dir, broken, faults=["health-fails"], files={BROKEN_MIGRATION: migration(
        "CREATE TABLE benchmark_broken (id int)", "DROP TABLE benchmark_broken")})
    print(f"setup: releasing the broken {broken} once over {first} (builds and pushes it; not timed)", flush=True)
    timed([*TOOL, "release", "--env-file", env_file, "--version", first, "--json"])
    try:
        timed([*TOOL, "release", "--env-file", env_file, "--version", broken, "--json"], expect_failure=True)
        print(f"recovery: {args.runs} rounds of the broken {broken} over {first}, each way", flush=True)
        rec_tool, rec_bash = recovery_rounds(env_file, args.runs, first, broken)
    finally:
        commit_version(app_dir, first, files={BROKEN_MIGRATION: None})  # the checkout as it was

    def row(name: str, tool: list[Run], bash: list[Run]) -> str:
        t, b = median(tool), median(bash)
        return (f"| {name} | {t:.2f} s | {b:.2f} s | {t / b:.1f}× | {max(r.peak_mb for r in tool):.0f} MB | "
                f"{max(r.peak_mb for r in bash):.0f} MB |")

    text = f"""# The flows side by side with the runbook by hand

Command: `PREFECT_API_URL=… python benchmarks/side_by_side.py --runs {args.runs}` after
`smartrelease sandbox up` and `smartrelease server up`, measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.
Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, {platform.python_implementation()}
{platform.python_version()}; the machine is shared, so read these as orders of magnitude.
The baseline is `benchmarks/runbook.sh`: the runbook's steps as a person runs them in
bash, sequentially. Each cell is the median whole-process wall time
({args.runs} preflight pairs in alternating order; {args.runs} rounds of releases, each
release and each deploy going from one version to the other: {2 * args.runs} of each). Peak
memory is the largest resident set of the process or of any program it ran
(wait4's ru_maxrss: `docker compose`, a Go program, is most of bash's).

| | smartrelease | bash runbook | ratio | smartrelease peak memory | bash peak memory |
|---|---:|---:|---:|---:|---:|
{row("preflight", pre_tool, pre_bash)}
{row(f"release of a pushed version ({first} ⇄ {second})", rel_tool, rel_bash)}

A broken release ({broken} over {first}) and the way back, {args.runs} rounds:

| median | smartrelease | bash runbook |
|---|---:|---:|
| time to detect (tool: its failing step; bash: the failing deploy) | {statistics.median(r.detect_s for r in rec_tool):.1f} s | {statistics.median(r.detect_s for r in rec_bash):.1f} s |
| time to recover (tool: detected → {first} verified; bash: `runbook.sh rollback`) | {statistics.median(r.recover_s for r in rec_tool):.1f} s | {statistics.median(r.recover_s for r in rec_bash):.1f} s |
| whole: the failed release and the way back | {statistics.median(r.whole_s for r in rec_tool):.1f} s | {statistics.median(r.whole_s for r in rec_bash):.1f} s |
| peak memory | {max(r.peak_mb for r in rec_tool):.0f} MB | {max(r.peak_mb for r in rec_bash):.0f} MB |

What each does:
- **preflight**: smartrelease runs six checks at once, reads the newest backup whole
  (decrypting it into `pg_restore`), checks WAL archiving against `pg_stat_archiver`,
  the certificate's chain and expiry; bash checks what the runbook lists, in turn, and
  can only checksum an encrypted backup. The slowest of smartrelease's checks took
  {statistics.median(slowest):.0f} ms (median): the rest of its time is importing Python
  packages and Prefect's flow run.
- **release**: smartrelease takes the lock, runs preflight, pins both images by digest,
  checks migrations, plans the rollback, starts the new containers beside the old, waits
  for them to be healthy, drains and removes the old, and verifies version and digests;
  bash recreates the containers (users see errors meanwhile) and polls `/ready` every
  second.
- **a broken release**: smartrelease judges the new backend by its health check while
  the old one keeps serving (its health check failing after it answered `/ready` with
  200 on its own address: failed at once, with no grace for a slow start), then, for the migration it ran, stops the new backend,
  takes a safety backup, runs the down step, relaunches {first} by digest and verifies
  it. Bash's deploy has already replaced {first}; the edge sends no traffic to a backend
  failing its health check, so `/ready` never answers and the deploy fails at its 120 s
  readiness timeout (users get errors all that time). A person then runs the rollback,
  whose time here excludes the minutes it takes a person to notice and type it, and
  skips the backup the runbook asks for before undoing a migration.
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
