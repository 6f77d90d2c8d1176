"""Preflight `database`: the app's credentials open a session (sequelize.authenticate())."""

import psycopg

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.adapters.postgres import connect_url, parse_database_url, reachable_url
from smartrelease.tasks.runbook_task import runbook_task

STEP = "database"


def check_database(env: Environment) -> Finding:
    db = parse_database_url(env.app.database_url, STEP)  # a URL that does not parse is not worth retrying
    try:
        db = reachable_url(env, STEP)
        with connect_url(db, STEP) as conn:
            one = conn.execute("SELECT 1").fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
    except StepFailed as exc:
        # A refused or timed-out connection may be a restart in progress: retry it.
        raise StepFailed(STEP, exc.reason, transient=True) from None
    except psycopg.Error as exc:
        raise StepFailed(STEP, f"query failed on {db.safe()}: {type(exc).__name__}", transient=True) from None
    if one != 1:
        raise StepFailed(STEP, f"SELECT 1 returned {one!r}")
    return Finding(detail=f"connected to {db.safe()}, PostgreSQL {version}")


database_task = runbook_task(STEP, timeout_s=30, retries=2, retry_delay_s=2)(check_database)
