"""Runbook, deploy step 2's guard, checked before anything is touched.

The entrypoint runs `npm run db:migrate` in production only with
ALLOW_PROD_MIGRATIONS=true and otherwise skips migrations, leaving new code on an
old schema. So the release computes the pending migrations itself, from the
migration files inside the image about to run and the "SequelizeMeta" table, and
refuses up front. After launch it confirms each one was applied.
"""

import io
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
    pending: list[str]
    unknown: list[str]  # recorded in the database but absent from the image (a downgrade)


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
        in_image = sorted(migration_files(engine(), backend_ref, env.target.migrations_dir))
    except docker.errors.DockerException as exc:
        raise StepFailed(GUARD_STEP, f"cannot read migrations from {backend_ref}: {exc}") from None
    applied = applied_migrations(env, GUARD_STEP)
    pending = [m for m in in_image if m not in applied]
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
    if unknown:
        return MigrationPlan(detail=f"{detail}; the database has migrations this image does not know: {', '.join(unknown)}",
                             warning=True, in_image=in_image, pending=pending, unknown=unknown)
    return MigrationPlan(detail=detail, in_image=in_image, pending=pending, unknown=unknown)


def confirm_migrations(env: Environment, plan: MigrationPlan) -> Finding:
    applied = applied_migrations(env, CONFIRM_STEP)
    missing = [m for m in plan.pending if m not in applied]
    if missing:
        raise StepFailed(CONFIRM_STEP, f"not applied after launch: {', '.join(missing)} (see the backend's log)")
    return Finding(detail=f"applied: {', '.join(plan.pending)}" if plan.pending else "nothing to apply")


plan_migrations_task = runbook_task(GUARD_STEP, timeout_s=120, retries=2)(plan_migrations)
confirm_migrations_task = runbook_task(CONFIRM_STEP, timeout_s=60, retries=2)(confirm_migrations)
