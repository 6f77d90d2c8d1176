"""Runbook, "Rollback plan (code + DB)", written down before deploy: what runs now
(version and digests, to go back to), the backup, and the migrations about to run
with whether each can be undone. An incomplete plan stops the release before
anything changes, unless this is the environment's first release."""

from datetime import datetime, timezone

import docker
from pydantic import BaseModel

from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import ADOPTED
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.report import Finding
from smartrelease.blocks.app_contract import ROLES
from smartrelease.tasks.build_pin import LABEL_VERSION, repository_path
from smartrelease.adapters.images import engine
from smartrelease.tasks.launch import team_config
from smartrelease.tasks.migrations import MigrationPlan
from smartrelease.tasks.backup.take import BackupRecord, fresh_backup
from smartrelease.tasks.runbook_task import runbook_task
from smartrelease.tasks.compose_checks import PINNED_FRONTEND_FIX, pinned_frontend_risk, stop_first_with_downtime
from smartrelease.tasks.edge_class import EDGE_MEANS, edge_of
from smartrelease.tasks.schema import schema_lines
from smartrelease.adapters.running import Container, app_services, running_services

STEP = "rollback-plan"
ADOPT_HINT = "released by hand? `smartrelease adopt` takes it over"




class DeployedVersion(BaseModel):
    """A version and its images pinned by digest: {role: registry/repository@sha256:...}."""

    version: str | None
    images: dict[str, str]
    # Images built by hand without the OCI labels, known by the version an adoption
    # recorded (`smartrelease adopt`): verify checks them against the app's answer only.
    adopted: bool = False


def adopted_version(history: list[dict], images: dict[str, str]) -> str | None:
    """The version the latest adoption recorded for exactly these images."""
    return next((row["version"] for row in reversed(history) if row.get("result") == ADOPTED
                 and all(row.get(role) == images.get(role) for role in ROLES)), None)


class MigrationUndo(BaseModel):
    name: str
    has_down: bool | None  # None: the image could not say; the undo is verified as it runs


class RollbackPlan(Finding):
    environment: str
    version: str
    first_release: bool
    previous: DeployedVersion | None
    backup: BackupRecord | None  # the backup a rollback restores: found now, or taken by the backup step
    backup_to_take: bool = False  # pending migrations: the backup step takes one (after any approval)
    migrations: list[MigrationUndo]
    applied_before: list[str]  # the migrations table before launch: what an undo returns to
    schema_before: list[str] = []  # the schema before launch (tasks/schema.py): what a rollback must give back
    # How a rollback gives the database back, decided before launch (database_decision).
    database: str = "nothing"  # nothing (no migration), undo (exact, newest first), restore (the backup)
    database_why: str = ""
    # App services the launch (and a rollback's relaunch) stops before starting the new
    # container, and why: they cannot run twice (a host port), so users get errors on them.
    stop_first: dict[str, str] = {}
    stop_first_s: dict[str, float] = {}  # about how long, each (tasks/compose_checks.downtime_s)
    edge: str = ""  # the edge class the launch assumes, and why (tasks/edge_class.py)
    pinned_frontend: str = ""  # what users may see: RELEASE_FRONTEND_PINS_BACKEND (compose_checks.pinned_frontend_risk)

    def stop_first_line(self) -> str | None:
        if not self.stop_first:
            return None
        about = {s: f" for about {self.stop_first_s[s]:.0f} s" if s in self.stop_first_s else "" for s in self.stop_first}
        return ("stop-first: users get errors on " + "; ".join(f"{s} ({why}){about[s]}" for s, why in self.stop_first.items())
                + ", from its stop until its new container is healthy (Docker's first health check comes one interval "
                "after the start; longer for an app slow to stop or to start: the report gives the time); "
                "everything else is cut over with no request dropped")

    def markdown(self, now: float | None = None) -> str:
        prev = self.previous
        lines = [f"# Rollback plan: {self.environment} {prev.version if prev else '—'} → {self.version}", "",
                 "| | |", "|---|---|",
                 f"| go back to | {prev.version if prev else '— (first release: nothing to go back to)'} |",
                 *(f"| {service} | `{ref}` |" for service, ref in (prev.images if prev else {}).items())]
        if b := self.backup:
            taken = datetime.fromtimestamp(b.taken_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
            lines += [f"| backup | {b.name} ({'taken by this release' if b.taken_now else 'newest in BACKUP_DIR'}) |",
                      f"| backup taken | {taken} ({b.age_s(now) / 60:.1f} min ago) |",
                      f"| backup sha256 | `{b.sha256}` |"]
        elif self.backup_to_take:
            lines.append("| backup | to be taken by this release before launch (pg_dump, encrypted, read back whole) |")
        else:
            lines.append("| backup | — |")
        lines += ["", "| migration about to run | down step |", "|---|---|"]
        says = {True: "yes", False: "**NO**: cannot be undone, restore the backup instead",
                None: "unknown (the image could not say): the undo is verified as it runs"}
        lines += [f"| {m.name} | {says[m.has_down]} |" for m in self.migrations] or ["| none | |"]
        if self.database != "nothing":
            how = ("exact undo, newest first" if self.database == "undo" else
                   "**restore** of the backup taken before launch: every write between it and the rollback is lost")
            lines += ["", f"Database on rollback: {how} ({self.database_why})."]
        if self.migrations and prev:
            lines += ["", tolerate(prev.version, [m.name for m in self.migrations])]
        if line := self.stop_first_line():
            lines += ["", f"Launch: **{line}**."]
        if self.edge:
            lines += ["", f"Cutover: {self.edge}; {EDGE_MEANS[self.edge.split()[1]]}."]
        if self.pinned_frontend:
            lines += ["", f"Frontend: **{self.pinned_frontend}**; to remove the risk, {PINNED_FRONTEND_FIX}."]
        return "\n".join(lines) + "\n"


def tolerate(running: str | None, migrations: list[str]) -> str:
    """The expand/contract rule, for the migrations of one release: the cutover runs
    them while the running version still serves (docs/cutover.md)."""
    return (f"{running or 'The running version'} serves while {', '.join(migrations)} run, and again if the release "
            "is rolled back: it must work with them applied (expand/contract), or release with `--stop-first`.")


def running_deployment(env: Environment, running: dict[str, Container] | None = None,
                       history: list[dict] = ()) -> DeployedVersion | None:
    """What runs now (read from Docker unless given), if every service runs an image
    known by its registry digest. Its version is the backend image's label, or for
    images without one, what the `history` recorded when it adopted them."""
    if running is None:
        try:
            running = running_services(engine(timeout_s=30), env)
        except docker.errors.DockerException as exc:
            raise StepFailed(STEP, f"cannot read the running containers: {exc}") from None
    images, by_role = {}, app_services(env, running)
    for role in ROLES:
        found = by_role.get(role)
        repository = f"{env.target.registry}/{repository_path(env, role)}"
        digest = found.digest_in(repository) if found else None
        if digest is None:
            return None
        images[role] = f"{repository}@{digest}"
    if labelled := by_role["backend"].image_labels.get(LABEL_VERSION):
        return DeployedVersion(version=labelled, images=images)
    version = adopted_version(list(history), images)
    return DeployedVersion(version=version, images=images, adopted=version is not None)


def running_version(env: Environment, running: dict[str, Container], history: list[dict] = ()) -> str | None:
    """The version that runs now, read one way for every caller: the backend image's
    label, else what the history recorded when it adopted images without one."""
    backend = app_services(env, running).get("backend")
    if backend is None:
        return None
    if labelled := backend.image_labels.get(LABEL_VERSION):
        return labelled
    deployment = running_deployment(env, running, history)
    return deployment.version if deployment else None


def database_decision(pending: list[str], applied: list[str], without_down: list[str]) -> tuple[str, str]:
    """How a rollback of `pending` gives the database back: ("nothing", why) when
    nothing migrates, ("undo", why) when an exact undo can be had, else ("restore", why).
    The undo command (`sequelize-cli db:migrate:undo`) reverts the highest-named applied
    migration, one per run: a pending one named before one already applied (added out
    of order) cannot be reverted without reverting that one too."""
    if not pending:
        return "nothing", "no migration runs"
    reasons = []
    newest = max(applied, default=None)
    if newest and (early := sorted(m for m in pending if m < newest)):
        reasons.append(f"{', '.join(early)} sorts before {newest}, already applied: the undo command reverts the "
                       "highest-named migration first")
    if no_down := [m for m in pending if m in without_down]:
        reasons.append(f"no down step: {', '.join(no_down)}")
    if reasons:
        return "restore", "; ".join(reasons)
    return "undo", f"{', '.join(sorted(pending, reverse=True))}, newest first"


def undo_out_of_order(to_undo: list[str], applied: list[str]) -> str | None:
    """Why the undo command cannot revert exactly `to_undo` (None when it can): it
    reverts the highest-named applied migration first, and one of `to_undo` sorts
    before a migration that stays applied."""
    staying = max((m for m in applied if m not in to_undo), default=None)
    if staying and (early := sorted(m for m in to_undo if m < staying)):
        return (f"{', '.join(early)} sorts before {staying}, which stays applied: the undo command reverts the "
                f"highest-named migration first, so it would undo {staying} instead")
    return None


def rollback_plan(env: Environment, version: str, migrations: MigrationPlan, first_release: bool,
                  history: list[dict] = ()) -> RollbackPlan:
    """Written before anything changes. The backup it names is the fresh one found in
    BACKUP_DIR, or, with migrations pending, the one the backup step will take."""
    previous = running_deployment(env, history=history)
    missing, backup = [], None
    # (Preflight's `running` check refuses both before anything is built; this holds
    # for what may have changed since.)
    if previous is None:
        missing.append("the running backend and frontend are not both known by a registry digest, so there is "
                       f"nothing pinned to go back to ({ADOPT_HINT})")
    elif previous.version is None:
        missing.append(f"the running backend image carries no {LABEL_VERSION} label (built without the OCI labels), "
                       f"so a rollback to it could not be verified ({ADOPT_HINT})")
    if not migrations.pending:
        try:
            backup = fresh_backup(env)
        except StepFailed as exc:
            missing.append(exc.reason)
    if missing and not first_release:
        raise StepFailed(STEP, "rollback plan incomplete: " + "; ".join(missing) + ". Nothing was changed.")
    steps = [MigrationUndo(name=m, has_down=None if m in migrations.down_unknown else m not in migrations.without_down)
             for m in migrations.pending]
    detail = (f"back to {previous.version} by digest" if previous else "first release: nothing to go back to")
    if backup:
        detail += f"; backup {backup.name}, {backup.age_s() / 60:.1f} min old"
    elif migrations.pending:
        detail += "; backup to be taken before launch"
    database, why = database_decision(migrations.pending, migrations.applied, migrations.without_down)
    if database == "restore":
        detail += f"; a rollback would restore the backup, not undo ({why})"
    try:
        config = team_config(env)
    except CommandFailed:
        config = {}  # preflight names it
    stop_first, stop_first_s = stop_first_with_downtime(env, config)
    edge = edge_of(env, config)
    detail += f"; {edge.line()}"
    if stop_first:
        detail += "; " + ", ".join(f"{name} stopped first: users get errors on it for about {stop_first_s[name]:.0f} s"
                                   for name in stop_first) + " during the launch"
    pinned = "" if first_release else pinned_frontend_risk(env) or ""  # nothing serves yet: nothing to keep
    if pinned:
        detail += f"; RELEASE_FRONTEND_PINS_BACKEND: {pinned}"
    return RollbackPlan(detail=detail, warning=(database == "restore" or (first_release and bool(missing))
                                                or bool(stop_first) or bool(pinned)),
                        environment=env.name, version=version, first_release=first_release, previous=previous,
                        backup=backup, backup_to_take=bool(migrations.pending), migrations=steps, applied_before=migrations.applied,
                        schema_before=schema_lines(env, STEP), database=database, database_why=why,
                        stop_first=stop_first, stop_first_s=stop_first_s, edge=edge.line(), pinned_frontend=pinned)


rollback_plan_task = runbook_task(STEP, timeout_s=60)(rollback_plan)
