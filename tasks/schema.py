"""The database's schema as a list of lines (tables, columns, constraints, indexes,
types, routines of the app's schemas), taken before a release launches and compared
after its rollback: an undo must give back exactly the schema it started from.

Sequelize runs a migration outside any transaction, so one that fails half-way keeps
what it did before failing (a table created, a column added) and is not recorded as
applied: no undo will remove it. Comparing the schemas is how a rollback finds out.
"""

import hashlib

import psycopg

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.runbook_task import runbook_task

STEP = "schema"
SHOWN = 8  # differences named in a report; the count says how many more

_APP_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"
_SCHEMA = f"""
SELECT 'relation ' || n.nspname || '.' || c.relname || ' (' || c.relkind::text || ')'
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {_APP_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT 'column ' || n.nspname || '.' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE {_APP_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || n.nspname || '.' || c.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {_APP_SCHEMAS}
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes n WHERE {_APP_SCHEMAS.replace('n.nspname', 'n.schemaname')}
UNION ALL
SELECT 'type ' || n.nspname || '.' || t.typname || ' ' || t.typtype::text
       || coalesce(' (' || (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                            FROM pg_enum e WHERE e.enumtypid = t.oid) || ')', '')
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE {_APP_SCHEMAS} AND t.typtype IN ('e', 'd', 'r')
UNION ALL
SELECT 'routine ' || p.oid::regprocedure::text
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {_APP_SCHEMAS}
ORDER BY 1
"""


def schema_lines(env: Environment, step: str = STEP) -> list[str]:
    try:
        with connect(env, step) as conn:
            return schema_of(conn)
    except psycopg.Error as exc:
        raise StepFailed(step, f"cannot read the schema: {type(exc).__name__}", transient=True) from None


def schema_of(conn: psycopg.Connection) -> list[str]:
    """The schema of the database `conn` is connected to, one line per object, sorted."""
    return [row[0] for row in conn.execute(_SCHEMA)]


def fingerprint(lines: list[str]) -> str:
    """A short name for a schema: equal schemas, equal fingerprints."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def differences(before: list[str], now: list[str]) -> list[str]:
    """`+ line` for what is there now and was not, `- line` for what has gone."""
    then, current = set(before), set(now)
    return [f"+ {line}" for line in now if line not in then] + [f"- {line}" for line in before if line not in current]


def describe(diff: list[str]) -> str:
    shown = "; ".join(diff[:SHOWN])
    return shown + (f"; and {len(diff) - SHOWN} more" if len(diff) > SHOWN else "")


def check_schema(env: Environment, before: list[str], version: str | None) -> Finding:
    """The schema must be what it was before `version` launched."""
    diff = differences(before, schema_lines(env))
    if diff:
        raise StepFailed(STEP, f"the schema is not as before {version or 'the release'} ({len(diff)} "
                               f"difference(s)): {describe(diff)}")
    return Finding(detail=f"as before {version or 'the release'}: {len(before)} schema objects, none changed")


check_schema_task = runbook_task(STEP, timeout_s=120, retries=1)(check_schema)
