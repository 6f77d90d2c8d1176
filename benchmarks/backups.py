"""Benchmark: backups at scale. A database of about 1 GB (`pgbench -i -s 70`) on a
PostgreSQL cluster of its own; paired in one run, median of `--runs`:

- the encrypted backup this tool takes (pg_dump custom format through AES-256-GCM,
  its checksum beside it) against plain `pg_dump -Fc -f FILE`;
- the verified restore (checksum, then decrypted straight into pg_restore) against
  plain `pg_restore -d` of the plain file, each into an empty database;
- preflight's `backups` check of the encrypted file (read whole: checksum, decrypt,
  pg_restore to /dev/null), the first time and again unchanged.

Each operation runs in a process of its own, so its peak memory is its own (our
Python's, and separately the largest of it and the programs it ran); at two sizes
(`--small-scale` too), to show it does not grow with the database.

usage: python benchmarks/backups.py [--scale 70] [--small-scale 7] [--runs 5] [--out docs/benchmarks-backups.md]
"""

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER, DB = "bench", "bench"


def child(op: str, args: argparse.Namespace) -> None:
    """One operation, in this (child) process; prints its own peak memory."""
    import resource

    from pydantic import SecretStr

    from smartrelease.tasks.backup.crypto import verify_checksum
    from smartrelease.tasks.backup.files import dump_database_encrypted, restore_into
    from smartrelease.tasks.pg_client import HostTools
    from smartrelease.adapters.postgres import DatabaseUrl

    def tools(dbname: str) -> HostTools:
        return HostTools(DatabaseUrl("127.0.0.1", args.port, dbname, USER, SecretStr(os.environ["PGPASSWORD"])))

    passphrase = os.environ["BENCH_PASSPHRASE"]
    started = time.perf_counter()  # after the imports: the operation's own time
    if op == "encrypted-dump":
        dump_database_encrypted(tools(DB), Path(args.file), passphrase, timeout_s=7200)
    elif op == "verified-restore":
        verify_checksum(Path(args.file))
        restore_into(Path(args.file), passphrase, tools(args.target_db), timeout_s=7200)
    elif op == "backups-check":  # preflight's check itself, with its memory of verified backups
        from smartrelease.blocks.app_environment import AppEnvironment
        from smartrelease.blocks.envfile import Environment
        from smartrelease.blocks.release_target import ReleaseTarget
        from smartrelease.tasks.backup.latest import check_backups

        env = Environment(name="bench", target=ReleaseTarget(backup_timeout_s=7200), app=AppEnvironment(
            backup_dir=str(Path(args.file).parent), backup_passphrase=passphrase))
        print(check_backups(env).detail, file=sys.stderr)
    print(json.dumps({"self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "op_s": time.perf_counter() - started}))


def timed(argv: list[str], env: dict) -> tuple[float, float, float | None]:
    """(seconds, peak MB of the process tree, our Python's own peak MB or None). For
    our operations, the seconds are the operation's own, without Python's start-up
    (about 2 s of imports here, the same at any size)."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{argv[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
        out.seek(0)
        text = out.read().decode().strip().splitlines()
    if text and text[-1].startswith("{"):
        said = json.loads(text[-1])
        return said["op_s"], usage.ru_maxrss / 1024, said["self_mb"]
    return seconds, usage.ru_maxrss / 1024, None


def measure(scale: int, runs: int, work: Path, port: int, cluster) -> dict:
    env = {**os.environ, "PGPASSWORD": os.environ["PGPASSWORD"], "PGHOST": "127.0.0.1", "PGPORT": str(port),
           "PGUSER": USER, "SMARTRELEASE_CACHE": str(work / "cache")}
    with cluster.admin() as conn:
        for name in ("bench", "restored"):
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB} OWNER {USER}")
    print(f"scale {scale}: pgbench -i", flush=True)
    subprocess.run(["/usr/bin/pgbench", "-i", "-q", "-s", str(scale), DB], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with cluster.admin(DB) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    (work / "plain").mkdir(exist_ok=True)
    (work / "backups").mkdir(exist_ok=True)
    plain, enc = work / "plain" / "plain.dump", work / "backups" / "backup.dump.enc"
    me = [sys.executable, str(Path(__file__).resolve()), "--port", str(port)]
    results: dict[str, list] = {k: [] for k in ("plain-dump", "encrypted-dump", "plain-restore", "verified-restore",
                                                "backups-check", "backups-check-again")}

    def fresh_target() -> None:
        with cluster.admin() as conn:
            conn.execute("DROP DATABASE IF EXISTS restored WITH (FORCE)")
            conn.execute(f"CREATE DATABASE restored OWNER {USER}")

    for i in range(runs):
        print(f"scale {scale}: run {i + 1}/{runs}", flush=True)
        pair = [("plain-dump", ["/usr/bin/pg_dump", "--format=custom", f"--file={plain}", DB]),
                ("encrypted-dump", [*me, "--op", "encrypted-dump", "--file", str(enc)])]
        for name, argv in (pair if i % 2 == 0 else pair[::-1]):
            for p in ([plain] if name == "plain-dump" else [enc, enc.with_name(enc.name + ".sha256")]):
                p.unlink(missing_ok=True)
            results[name].append(timed(argv, env))
        pair = [("plain-restore", ["/usr/bin/pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                                   "--single-transaction", "-d", "restored", str(plain)]),
                ("verified-restore", [*me, "--op", "verified-restore", "--file", str(enc), "--target-db", "restored"])]
        for name, argv in (pair if i % 2 == 0 else pair[::-1]):
            fresh_target()
            results[name].append(timed(argv, env))
        results["backups-check"].append(timed([*me, "--op", "backups-check", "--file", str(enc)], env))
        results["backups-check-again"].append(timed([*me, "--op", "backups-check", "--file", str(enc)], env))
    return {"scale": scale, "size": size, "plain_bytes": plain.stat().st_size, "enc_bytes": enc.stat().st_size,
            "results": results}


def table(m: dict) -> str:
    r = m["results"]

    def med(name: str, i: int = 0) -> float:
        return statistics.median(x[i] for x in r[name])

    def peak(name: str) -> str:
        own = [x[2] for x in r[name] if x[2] is not None]
        return f"{max(x[1] for x in r[name]):.0f} MB" + (f" (Python {max(own):.0f} MB)" if own else "")

    rows = [
        ("pg_dump -Fc to a file", "plain-dump", None),
        ("encrypted backup (pg_dump -Fc → AES-256-GCM, checksum)", "encrypted-dump", "plain-dump"),
        ("pg_restore -d of the plain file", "plain-restore", None),
        ("verified restore (checksum, decrypt → pg_restore -d)", "verified-restore", "plain-restore"),
        ("preflight `backups` check (read whole)", "backups-check", None),
        ("the same check again, file unchanged", "backups-check-again", "backups-check"),
    ]
    lines = [f"### `pgbench -i -s {m['scale']}`: database {m['size'] / 1e9:.2f} GB, plain dump "
             f"{m['plain_bytes'] / 1e6:.0f} MB, encrypted {m['enc_bytes'] / 1e6:.0f} MB", "",
             "| operation | median | against | peak memory |", "|---|---:|---:|---:|"]
    for label, name, base in rows:
        against = f"{(med(name) / med(base) - 1) * 100:+.0f}%" if base else ""
        lines.append(f"| {label} | {med(name):.1f} s | {against} | {peak(name)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=70)
    ap.add_argument("--small-scale", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks-backups.md")
    ap.add_argument("--op")
    ap.add_argument("--port", type=int)
    ap.add_argument("--file")
    ap.add_argument("--target-db")
    args = ap.parse_args()
    if args.op:
        return child(args.op, args)

    from smartrelease.sandbox.identity import any_free_port
    from smartrelease.local_postgres import Cluster

    root = Path(tempfile.mkdtemp(prefix="smartrelease-bench-"))
    root.chmod(0o755)  # the server runs as `postgres` and must reach its files
    port = any_free_port()
    os.environ["PGPASSWORD"], os.environ["BENCH_PASSPHRASE"] = secrets.token_hex(16), secrets.token_hex(16)
    cluster = Cluster(root / "pg", port)
    try:
        cluster.init()
        cluster.start()
        cluster.ensure_app_database(USER, os.environ["PGPASSWORD"], "postgres_bench_unused")
        work = root / "work"
        work.mkdir()
        measured = [measure(s, args.runs, work, port, cluster) for s in (args.small_scale, args.scale)]
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
    text = f"""# Backups at scale

Command: `python benchmarks/backups.py --scale {args.scale} --small-scale {args.small_scale} --runs {args.runs}`,
measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, {platform.system()}
{platform.release()}, PostgreSQL 15 on this host (data and files on the same disk). Each
operation is a process of its own; medians of {args.runs}, the two of each pair in
alternating order; ours are timed from inside, without Python's start-up (about 2 s
of imports, the same at any size). "against" is the extra time over the plain
operation above it.
Peak memory is the largest resident set of the process or of a program it ran
(pg_dump, pg_restore), and in brackets our Python process's own.

{chr(10).join(table(m) for m in measured)}"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
