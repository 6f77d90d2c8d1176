"""Runbook, deploy step 2's guard, checked before anything is touched.

The entrypoint runs `npm run db:migrate` in production only with
ALLOW_PROD_MIGRATIONS=true and otherwise skips migrations, leaving new code on an
old schema. So the release computes the pending migrations itself, from the
migration files inside the image about to run and the "SequelizeMeta" table, and
refuses up front. After launch it confirms each one was applied.
"""

import io
import re
import tarfile

import docker
from psycopg import sql

from blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from tasks.images import engine
from tasks.postgres import connect
from tasks.runbook_task import runbook_task

GUARD_STEP = "migration-guard"
CONFIRM_STEP = "migrations"
META_TABLE = "SequelizeMeta"
MIGRATION_SUFFIXES = (".js", ".cjs", ".mjs", ".ts", ".sql")


class MigrationPlan(Finding):
    in_image: list[str]
    applied: list[str] = []  # in the database before the release
    pending: list[str]
    unknown: list[str]  # recorded in the database but absent from the image (a downgrade)
    without_down: list[str] = []  # pending migrations that cannot be undone


# A Sequelize migration exports `down` (`down: async (...) =>` or `async down(...)`);
# the stand-in's SQL files carry a `-- down` section. A down step that exists but
# does nothing is not detected: the undo would then fail its confirmation instead.
_JS_DOWN = re.compile(rb"\bdown\s*(:|\()")
_SQL_DOWN = re.compile(rb"^\s*--\s*down\s*$(.*)", re.MULTILINE | re.DOTALL | re.IGNORECASE)


def has_down_step(name: str, content: bytes) -> bool:
    if name.endswith(".sql"):
        found = _SQL_DOWN.search(content)
        body = found.group(1) if found else b""
        return any(line.strip() and not line.strip().startswith(b"--") for line in body.splitlines())
    return bool(_JS_DOWN.search(content))


def migration_files(client: docker.DockerClient, image_ref: str, directory: str) -> dict[str, bytes]:
    """The migration files in `directory` of the image, read without running it."""
    container = client.containers.create(image_ref, entrypoint=["/bin/true"], command=[])
    try:
        stream, _ = container.get_archive(directory)
        data = b"".join(stream)
    except docker.errors.NotFound:
        raise StepFailed(GUARD_STEP, f"the backend image has no {directory} (set RELEASE_MIGRATIONS_DIR)") from None
    finally:
        container.remove(force=True)
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and "/" in member.name and name.endswith(MIGRATION_SUFFIXES):
                files[name] = tar.extractfile(member).read()
    return files


def applied_migrations(env: Environment, step: str) -> list[str]:
    with connect(env.app.database_url, step) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f'"{META_TABLE}"',)).fetchone()[0]
        if exists is None:
            return []
        rows = conn.execute(sql.SQL("SELECT name FROM {} ORDER BY name").format(sql.Identifier(META_TABLE)))
        return [r[0] for r in rows]


def plan_migrations(env: Environment, backend_ref: str) -> MigrationPlan:
    try:
        files = migration_files(engine(), backend_ref, env.target.migrations_dir)
    except docker.errors.DockerException as exc:
        raise StepFailed(GUARD_STEP, f"cannot read migrations from {backend_ref}: {exc}") from None
    in_image = sorted(files)
    applied = applied_migrations(env, GUARD_STEP)
    pending = [m for m in in_image if m not in applied]
    without_down = [m for m in pending if not has_down_step(m, files[m])]
    unknown = [m for m in applied if m not in in_image]
    allow = env.app.allow_prod_migrations == "true"
    if pending and env.target.production and not allow:
        raise StepFailed(
            GUARD_STEP,
            f"{len(pending)} pending migration(s) ({', '.join(pending)}) and ALLOW_PROD_MIGRATIONS is not 'true': "
            "the entrypoint would skip them and run the new code on the old schema. Nothing was changed; "
            "set ALLOW_PROD_MIGRATIONS=true to release this version.",
        )
    detail = f"{len(pending)} pending: {', '.join(pending)}" if pending else f"none pending ({len(in_image)} in the image, all applied)"
    if without_down:
        detail += f"; no down step: {', '.join(without_down)}"
    facts = dict(in_image=in_image, applied=applied, pending=pending, unknown=unknown, without_down=without_down)
    if unknown:
        return MigrationPlan(detail=f"{detail}; the database has migrations this image does not know: {', '.join(unknown)}",
                             warning=True, **facts)
    return MigrationPlan(detail=detail, **facts)


def confirm_migrations(env: Environment, plan: MigrationPlan) -> Finding:
    applied = applied_migrations(env, CONFIRM_STEP)
    missing = [m for m in plan.pending if m not in applied]
    if missing:
        raise StepFailed(CONFIRM_STEP, f"not applied after launch: {', '.join(missing)} (see the backend's log)")
    return Finding(detail=f"applied: {', '.join(plan.pending)}" if plan.pending else "nothing to apply")


plan_migrations_task = runbook_task(GUARD_STEP, timeout_s=120, retries=2)(plan_migrations)
confirm_migrations_task = runbook_task(CONFIRM_STEP, timeout_s=60, retries=2)(confirm_migrations)
