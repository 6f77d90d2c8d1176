"""A drill's scratch database: a throwaway database on the live server, restored
into, checked, and dropped. Its name says it is one (`smartrelease_drill_<hex>`), so
a drill that was killed before dropping its own is cleaned up by the next one;
nothing else is ever created or dropped here, and never the live database.

The app's user must be allowed to create databases (CREATEDB): a production
database of the Compose project (POSTGRES_USER) is its superuser; a database
outside Compose may need `ALTER ROLE <user> CREATEDB`.
"""

import secrets
from dataclasses import replace

import psycopg
from psycopg import sql

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.adapters.postgres import DatabaseUrl, connect_url, reachable_url
from smartrelease.tasks.runbook_task import runbook_task

CREATE_STEP, DROP_STEP = "scratch", "drop-scratch"
PREFIX = "smartrelease_drill_"


class Scratch(Finding):
    name: str


def scratch_url(env: Environment, name: str, step: str) -> DatabaseUrl:
    """The scratch database `name`, as this host reaches the live server."""
    if not name.startswith(PREFIX):  # the one guard between a drill and the live database
        raise StepFailed(step, f"{name} is not a scratch database ({PREFIX}…): refused")
    return replace(reachable_url(env, step), dbname=name)


def leftovers(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (PREFIX.replace("_", r"\_") + "%",))]


def _drop(conn: psycopg.Connection, name: str) -> None:
    # FORCE: a session a killed drill left open must not keep its database alive.
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_scratch(env: Environment) -> Scratch:
    live = reachable_url(env, CREATE_STEP)
    name = PREFIX + secrets.token_hex(4)
    with connect_url(live, CREATE_STEP) as conn:
        old = leftovers(conn)
        try:
            for stale in old:
                _drop(conn, stale)
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise StepFailed(CREATE_STEP, f"{live.user or 'the app user'} may not create (or drop) databases on "
                                          f"{live.safe()}: a drill restores into a scratch database; grant it with "
                                          f"`ALTER ROLE {live.user} CREATEDB`. The live database was not touched") from None
        except psycopg.Error as exc:
            raise StepFailed(CREATE_STEP, f"cannot create the scratch database: {type(exc).__name__}: "
                                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                             transient=True) from None
    cleaned = f"; dropped {len(old)} left by an earlier drill ({', '.join(old)})" if old else ""
    return Scratch(detail=f"{name} created on {live.safe().rsplit('/', 1)[0]}{cleaned}", name=name)


def drop_scratch(env: Environment, name: str) -> Finding:
    scratch_url(env, name, DROP_STEP)  # refuses any other name
    with connect_url(reachable_url(env, DROP_STEP), DROP_STEP) as conn:
        try:
            _drop(conn, name)
        except psycopg.Error as exc:
            raise StepFailed(DROP_STEP, f"{name} was not dropped ({type(exc).__name__}): the next drill drops it",
                             transient=True) from None
        if name in leftovers(conn):
            raise StepFailed(DROP_STEP, f"{name} is still there after DROP DATABASE: the next drill drops it")
    return Finding(detail=f"{name} dropped")


create_scratch_task = runbook_task(CREATE_STEP, timeout_s=120, retries=1, retry_delay_s=2)(create_scratch)
drop_scratch_task = runbook_task(DROP_STEP, timeout_s=120, retries=2, retry_delay_s=2)(drop_scratch)
