"""Deciding a rollback before touching anything: the version and images to bring
back, which migrations to undo with which image, which backup to restore.

Two entry points: after a failed release (the release's rollback plan says what
ran before) and the standalone rollback flow (the history says it).
"""

from pathlib import Path
from typing import Literal, get_args

import docker

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.refs import ImageRef
from smartrelease.report import Finding
from smartrelease.tasks.backup.crypto import sha256_file
from smartrelease.tasks.backup.files import BackupUnreadable, read_whole
from smartrelease.blocks.app_contract import ROLES
from smartrelease.tasks.build_pin import registry_for, repository_path
from smartrelease.adapters.images import engine, ensure_local
from smartrelease.tasks.migrations import applied_migrations, down_steps, migration_files
from smartrelease.tasks.pg_client import pg_tools
from smartrelease.adapters.registry import RegistryError
from smartrelease.tasks.backup.take import BackupRecord
from smartrelease.record.history import RELEASED, deployed
from smartrelease.tasks.rollback_plan import (DeployedVersion, RollbackPlan, adopted_version, running_deployment,
                                              undo_out_of_order)
from smartrelease.tasks.runbook_task import runbook_task
from smartrelease.adapters.running import Container, app_services, project_containers, running_services, service_containers

Strategy = Literal["undo", "restore", "none"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
STEP = "rollback-target"
class RollbackInputs(Finding):
    environment: str
    from_version: str | None
    target: DeployedVersion
    strategy: str
    to_undo: list[str]  # newest first
    undo_image: str | None  # the backend image holding their down steps
    without_down: list[str]  # of to_undo
    backup: BackupRecord | None  # what `restore` restores
    failed_migrations: list[str] = []  # pending in the failed release and never applied: a migration was the cause
    schema_before: list[str] | None = None  # after a failed release: the schema its database step must give back


def after_failed_release(env: Environment, plan: RollbackPlan, pending: list[str], new_backend: str,
                         strategy: str) -> RollbackInputs:
    """The release's own migrations, from "SequelizeMeta" now against before launch.
    Where the plan found no exact undo (database "restore"), an undo of migrations that
    did run becomes a restore of the backup the release took before launch."""
    applied = applied_migrations(env, STEP)
    to_undo = sorted((m for m in applied if m not in plan.applied_before), reverse=True)
    without_down = [m.name for m in plan.migrations if m.has_down is False and m.name in to_undo]
    backup = plan.backup if plan.backup and plan.backup.taken_now else None
    planned_restore = strategy == "undo" and plan.database == "restore" and bool(to_undo) and backup is not None
    if planned_restore:
        strategy = "restore"
    detail = f"back to {plan.previous.version}; database: {strategy}"
    if planned_restore:
        detail += f", as the rollback plan decided ({plan.database_why})"
    detail += f", undo {', '.join(to_undo)}" if strategy == "undo" and to_undo else ""
    return RollbackInputs(detail=detail, environment=env.name, from_version=plan.version, target=plan.previous,
                          strategy=strategy, to_undo=to_undo, undo_image=new_backend, without_down=without_down,
                          backup=backup, failed_migrations=[m for m in pending if m not in applied],
                          schema_before=plan.schema_before or None)


def target_from_history(stack: list[dict], running: DeployedVersion | None, to_version: str | None) -> dict:
    """The history row to go back to. Default: the release before the one running;
    when what runs is not exactly the last release (an interrupted release), the last release."""
    if to_version:
        row = next((r for r in reversed(stack) if r.get("version") == to_version), None)
        if row is None:
            raise StepFailed(STEP, f"{to_version} is not among the releases that can be gone back to "
                                   f"({', '.join(r['version'] for r in stack) or 'none'})")
        return row
    if not stack:
        raise StepFailed(STEP, "the history has no release to go back to")
    top = stack[-1]
    consistent = running is not None and all(running.images.get(s) == top.get(s) for s in ROLES)
    if not consistent:
        return top
    if len(stack) < 2:
        raise StepFailed(STEP, f"{top['version']} runs and is the only release in the history: nothing to go back to")
    return stack[-2]


def missing_images(env: Environment, refs: list[str]) -> list[str]:
    """The references (registry/repository@digest) the registry no longer has."""
    with registry_for(env) as registry:
        return [ref for ref in refs if registry.digest(ImageRef.parse(ref).path, ImageRef.parse(ref).digest) is None]


def is_exactly(client: docker.DockerClient, env: Environment, deployment: DeployedVersion | None) -> bool:
    """Whether the project is exactly `deployment`: every container of the project
    running its service's image. A release killed half-way leaves a container it
    created (or a service on the new image) behind."""
    if deployment is None:
        return False
    for c in project_containers(client, env.target.compose_project or ""):
        role = env.target.role_of(c.labels.get("com.docker.compose.service", ""))
        ref = deployment.images.get(role) if role else None
        if ref is None:
            continue  # not a release's service (the edge proxy, the database)
        digests = client.images.get(c.attrs["Image"]).attrs.get("RepoDigests") or []
        if c.status != "running" or ref not in digests:
            return False
    return True


def for_rollback_flow(env: Environment, history: list[dict], to_version: str | None, strategy: str) -> RollbackInputs:
    client = engine()
    services = running_services(client, env)
    current = running_deployment(env, services, history)
    row = target_from_history(deployed(history), current if is_exactly(client, env, current) else None, to_version)
    images = {s: row[s] for s in ROLES}
    target = DeployedVersion(version=row["version"], images=images,
                        adopted=adopted_version(history, images) == row["version"])
    try:
        missing = missing_images(env, list(target.images.values()))
    except RegistryError as exc:
        raise StepFailed(STEP, f"cannot check the target's images: {exc}; nothing was changed") from None
    if missing:
        raise StepFailed(STEP, f"{target.version}'s image(s) are no longer in the registry: {', '.join(missing)}; "
                               "nothing was changed")
    try:
        ensure_local(client, target.images["backend"], env.registry_credentials)
        target_files = migration_files(client, target.images["backend"], env.target.migrations_dir)
    except docker.errors.DockerException as exc:
        raise StepFailed(STEP, f"cannot read {target.version}'s migrations: {exc}; nothing was changed") from None
    applied = applied_migrations(env, STEP)
    to_undo = sorted((m for m in applied if m not in target_files), reverse=True)

    undo_image, without_down = None, []
    if strategy == "undo" and (why := undo_out_of_order(to_undo, applied)):
        raise StepFailed(STEP, f"{why}; nothing was changed. Run the rollback with --db-strategy restore: it restores "
                               "the backup taken before they were applied (every write since then is lost)")
    if to_undo and strategy == "undo":
        undo_image = _undo_image(client, env, to_undo) or _backend_ref(env, services)
        files = migration_files(client, undo_image, env.target.migrations_dir) if undo_image else {}
        downs = down_steps(client, undo_image, env.target.migrations_dir, [m for m in to_undo if m in files])
        without_down = [m for m in to_undo if m not in files or m in downs.without()]

    backup = None
    if strategy == "restore":
        backup = _recorded_backup(env, history, row)
    detail = f"back to {target.version} (images in the registry); database: {strategy}"
    if to_undo:
        detail += f"; applied since: {', '.join(to_undo)}"
    return RollbackInputs(detail=detail, environment=env.name,
                          from_version=current.version if current else None, target=target, strategy=strategy,
                          to_undo=to_undo, undo_image=undo_image, without_down=without_down, backup=backup)


def _undo_image(client: docker.DockerClient, env: Environment, to_undo: list[str]) -> str | None:
    """Among the backend's containers (a release interrupted during its cutover leaves
    the old and the new side by side), the image that holds every migration to undo."""
    repository = f"{env.target.registry}/{repository_path(env, 'backend')}"
    for c in service_containers(client, env.target.compose_project or "", env.target.backend_service):
        if not c.reference.startswith(repository + "@"):
            continue
        try:
            files = migration_files(client, c.reference, env.target.migrations_dir)
        except docker.errors.DockerException:
            continue  # its image cannot be read: another container's may
        if all(m in files for m in to_undo):
            return c.reference
    return None


def _backend_ref(env: Environment, services: dict[str, Container]) -> str | None:
    """The backend container's image by digest, whether it runs or not (an interrupted
    release): the image that applied the migrations, so the one with their down steps."""
    repository = f"{env.target.registry}/{repository_path(env, 'backend')}"
    found = app_services(env, services).get("backend")
    digest = found.digest_in(repository) if found else None
    return f"{repository}@{digest}" if digest else None


def backup_after(history: list[dict], target: dict) -> dict | None:
    """The backup taken before the oldest schema change still in the database since
    the target: the first one recorded after the target's row by a release that
    passed, or by a failed one whose rollback left migrations applied or the schema
    changed. (A failed release that undid its migrations left nothing to restore.)"""
    later = history[next((i for i, r in enumerate(history) if r is target), len(history)) + 1:]
    return next((r for r in later
                 if r.get("backup") and (r.get("result") == RELEASED or r.get("migrations_left") or r.get("schema_left"))),
                None)


def _recorded_backup(env: Environment, history: list[dict], target: dict) -> BackupRecord:
    """The backup taken before the first release after the target, checked and read whole now."""
    row = backup_after(history, target)
    if not row:
        raise StepFailed(STEP, f"the history records no pre-release backup after {target.get('version')}; nothing was changed")
    name, recorded = str(row["backup"]), str(row.get("backup_sha256") or "") or None
    if name != Path(name).name or name.startswith(".") or "\\" in name:
        raise StepFailed(STEP, f"the history's backup name {name[:80]!r} is not a file name in BACKUP_DIR (edited?); "
                               "nothing was changed")
    path = Path(env.app.backup_dir or "") / name
    if not path.is_file():
        raise StepFailed(STEP, f"backup {name} is not in BACKUP_DIR; nothing was changed")
    actual = sha256_file(path)
    if recorded and actual != recorded:
        raise StepFailed(STEP, f"backup {name} is not the one the history recorded (SHA-256 {actual[:12]}…, recorded "
                               f"{recorded[:12]}… when it was taken): replaced since; nothing was changed")
    try:
        read_whole(path, env.app.backup_passphrase.get_secret_value() if env.app.backup_passphrase else None,
                   env.target.backup_timeout_s, pg_tools(env, STEP, server=False))
    except BackupUnreadable as exc:
        raise StepFailed(STEP, f"backup {name} refused before any restore: {exc}") from None
    return BackupRecord(detail=name, name=name, path=str(path), sha256=recorded or actual,
                        taken_at=path.stat().st_mtime, taken_now=False)


for_rollback_flow_task = runbook_task(STEP, timeout_s=900)(for_rollback_flow)
after_failed_release_task = runbook_task(STEP, timeout_s=60, retries=2)(after_failed_release)
