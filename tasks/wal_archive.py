"""Preflight `wal-archive`: WAL shipping works (pg_stat_archiver and WAL_ARCHIVE_DIR agree)."""

import time
from pathlib import Path

import psycopg

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.runbook_task import runbook_task

STEP = "wal-archive"

_QUERY = """
SELECT current_setting('archive_mode'),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time,
       now()
FROM pg_stat_archiver a
"""


def segment_number(walfile: str, segment_size: int) -> tuple[int, int]:
    """(timeline, absolute segment number) of a WAL file name TTTTTTTTLLLLLLLLSSSSSSSS."""
    timeline, log, seg = (int(walfile[i : i + 8], 16) for i in (0, 8, 16))
    return timeline, log * (0x1_0000_0000 // segment_size) + seg


def waiting_segments(current: str | None, last_archived: str | None, segment_size: int) -> int | None:
    """Completed segments not yet archived; None when it cannot be told."""
    if not current or not last_archived or len(last_archived) < 24:
        return None
    (tl_cur, cur), (tl_last, last) = segment_number(current, segment_size), segment_number(last_archived[:24], segment_size)
    if tl_cur != tl_last:
        return None
    return max(0, cur - last - 1)


def check_wal_archive(env: Environment) -> Finding:
    try:
        with connect(env, STEP) as conn:
            row = conn.execute(_QUERY).fetchone()
    except StepFailed as exc:
        raise StepFailed(STEP, exc.reason, transient=True) from None
    except psycopg.Error as exc:
        raise StepFailed(STEP, f"cannot read pg_stat_archiver: {type(exc).__name__}", transient=True) from None
    (mode, seg_size, in_recovery, current, archived, last_wal, last_time, failed, failed_wal, failed_time, db_now) = row

    if mode == "off":
        return Finding(detail="warning: archive_mode is off, WAL is not shipped and point-in-time recovery is impossible", warning=True)

    if failed_time and (last_time is None or failed_time > last_time):
        since = f"since the last success at {last_time:%Y-%m-%d %H:%M:%S %Z}" if last_time else "and nothing was ever archived"
        raise StepFailed(STEP, f"archiver is failing: {failed} failures, last on {failed_wal} at {failed_time:%Y-%m-%d %H:%M:%S %Z}, {since}")

    if not last_wal:
        return Finding(detail=f"warning: archive_mode={mode} but no segment archived yet (current {current})", warning=True)

    age_min = (db_now - last_time).total_seconds() / 60
    waiting = waiting_segments(current, last_wal, seg_size)
    if waiting and age_min > env.target.wal_max_age_minutes:
        raise StepFailed(
            STEP,
            f"{waiting} WAL segments wait to be archived and the last one shipped ({last_wal}) is {age_min:.0f} min old, "
            f"over {env.target.wal_max_age_minutes:g} min",
        )

    if not env.app.wal_archive_dir:
        raise StepFailed(STEP, "WAL_ARCHIVE_DIR is not set")
    directory = Path(env.app.wal_archive_dir)
    if not directory.is_dir():
        raise StepFailed(STEP, f"WAL_ARCHIVE_DIR {directory} is not a directory")
    # The archive may compress (000…1.gz): match on the segment name as a prefix.
    if not any(p.name.startswith(last_wal) for p in directory.iterdir()):
        raise StepFailed(STEP, f"last archived segment {last_wal} is not in WAL_ARCHIVE_DIR {directory}: archive_command ships elsewhere")
    files = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]
    newest_age_min = (time.time() - max(p.stat().st_mtime for p in files)) / 60
    return Finding(
        detail=f"archive_mode={mode}, {archived} archived, last {last_wal} {age_min:.0f} min ago, "
        f"{waiting if waiting is not None else '?'} waiting, newest file in {directory} {newest_age_min:.0f} min old"
    )


wal_archive_task = runbook_task(STEP, timeout_s=30, retries=2, retry_delay_s=2)(check_wal_archive)
