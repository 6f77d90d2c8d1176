"""Runbook, deploy step 2's guard, checked before anything is touched.

The entrypoint runs `npm run db:migrate` in production only with
ALLOW_PROD_MIGRATIONS=true and otherwise skips migrations, leaving new code on an
old schema. So the release computes the pending migrations itself, from the
migration files inside the image about to run and the migrations table
(RELEASE_MIGRATIONS_TABLE, Sequelize's "SequelizeMeta" by default), and refuses up
front. After launch it confirms each one was applied.

Whether a migration can be undone is asked of the image, not guessed from its text:
the image's own Node.js loads each module (CommonJS or ESM, as sequelize-cli does)
in a one-off container without a network and reports whether it exports a `down`
function. An image that cannot be asked (no `node`, a module that does not load)
leaves the answer unknown, and the undo itself is then verified when it runs.
"""

import io
import json
import tarfile

import docker
import psycopg
from psycopg import sql
from pydantic import BaseModel

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.adapters.images import engine
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.runbook_task import runbook_task

GUARD_STEP = "migration-guard"
CONFIRM_STEP = "migrations"
# What sequelize-cli runs (its pattern: .js, .cjs, .cts and .ts, not .d.ts) and ESM.
MIGRATION_SUFFIXES = (".js", ".cjs", ".mjs", ".ts", ".cts")


class MigrationPlan(Finding):
    in_image: list[str]
    applied: list[str] = []  # in the database before the release
    pending: list[str]
    unknown: list[str]  # recorded in the database but absent from the image (a downgrade)
    without_down: list[str] = []  # pending migrations that export no `down`: cannot be undone
    down_unknown: list[str] = []  # pending migrations the image could not say about
    edited: list[str] = []  # applied, and their file differs from the running version's: the edit never runs


# Run by the image's `node -e` with the directory and the file names as arguments;
# prints {name: true | false | "why it could not be loaded"} as one JSON line.
DOWN_PROBE = r"""
const path = require("path"), { pathToFileURL } = require("url");
const [dir, ...names] = process.argv.slice(1);
(async () => {
  const out = {};
  for (const name of names) {
    try {
      const m = await import(pathToFileURL(path.join(dir, name)).href);
      const mod = m.default && typeof m.default === "object" ? m.default : m;
      out[name] = typeof (mod.down ?? m.down) === "function";
    } catch (e) {
      out[name] = String((e && e.message) || e).split("\n")[0].slice(0, 200);
    }
  }
  process.stdout.write("smartrelease-down-probe " + JSON.stringify(out) + "\n");
})();
"""
PROBE_TIMEOUT_S = 120


class DownSteps(BaseModel):
    """Which migrations export a `down` function, as the image's Node.js says."""

    has: dict[str, bool | None]  # None: could not be told
    unknown_why: str | None = None

    def without(self) -> list[str]:
        return [m for m, has in self.has.items() if has is False]

    def unknown(self) -> list[str]:
        return [m for m, has in self.has.items() if has is None]


def down_steps(client: docker.DockerClient, image_ref: str, directory: str, names: list[str]) -> DownSteps:
    """Ask the image whether each of `names` (files in `directory`) exports `down`."""
    if not names:
        return DownSteps(has={})
    container = None
    try:
        container = client.containers.create(image_ref, entrypoint=["node", "-e", DOWN_PROBE],
                                              command=[directory, *names], network_disabled=True)
        container.start()
        status = container.wait(timeout=PROBE_TIMEOUT_S)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip().splitlines()
    except docker.errors.APIError as exc:  # no `node` in the image, among others
        return DownSteps(has={m: None for m in names}, unknown_why=f"the image cannot run node: {exc.explanation or exc}")
    except Exception as exc:  # a probe that outlives its limit (the read times out)
        return DownSteps(has={m: None for m in names}, unknown_why=f"node did not answer: {type(exc).__name__}")
    finally:
        if container is not None:
            container.remove(force=True)
    line = next((l for l in out.splitlines() if l.startswith("smartrelease-down-probe ")), None)
    if status.get("StatusCode") != 0 or line is None:
        why = err[-1] if err else f"exit {status.get('StatusCode')}"
        return DownSteps(has={m: None for m in names}, unknown_why=f"node could not load the migrations: {why[:200]}")
    answers = json.loads(line.split(" ", 1)[1])
    has = {m: answers.get(m) if isinstance(answers.get(m), bool) else None for m in names}
    failed = {m: answers[m] for m in names if isinstance(answers.get(m), str)}
    why = "; ".join(f"{m}: {e}" for m, e in failed.items()) or None
    return DownSteps(has=has, unknown_why=f"node could not load {why}" if why else None)


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
            # Files directly in the directory: sequelize-cli does not look in subdirectories.
            if (member.isfile() and member.name.count("/") == 1 and name.endswith(MIGRATION_SUFFIXES)
                    and not name.endswith(".d.ts")):
                files[name] = tar.extractfile(member).read()
    return files


def applied_migrations(env: Environment, step: str) -> list[str]:
    """The names in the migrations table, in name order (Sequelize's own order); [] before the first."""
    with connect(env, step) as conn:
        return migrations_in(conn, env.target.migrations_table) or []


def migrations_in(conn: psycopg.Connection, table: str) -> list[str] | None:
    """The names in `table` of the database `conn` is on, in name order; None when it does not exist."""
    ident = sql.Identifier(table)
    if conn.execute("SELECT to_regclass(%s)", (ident.as_string(conn),)).fetchone()[0] is None:
        return None
    return [r[0] for r in conn.execute(sql.SQL("SELECT name FROM {} ORDER BY name").format(ident))]


def edited_since(running: dict[str, bytes], new: dict[str, bytes], applied: list[str]) -> list[str]:
    """Applied migrations whose file the new image changes: Sequelize runs a migration
    once, by name, so the change never reaches the database (and its `down` may no
    longer undo what its `up` did)."""
    return [m for m in applied if m in running and m in new and running[m] != new[m]]


def plan_migrations(env: Environment, backend_ref: str, running_ref: str | None = None) -> MigrationPlan:
    """`running_ref`: the image the backend runs now (None on a first release)."""
    client = engine()
    try:
        files = migration_files(client, backend_ref, env.target.migrations_dir)
    except docker.errors.DockerException as exc:
        raise StepFailed(GUARD_STEP, f"cannot read migrations from {backend_ref}: {exc}") from None
    in_image = sorted(files)
    applied = applied_migrations(env, GUARD_STEP)
    edited = []
    if running_ref:
        try:
            edited = edited_since(migration_files(client, running_ref, env.target.migrations_dir), files, applied)
        except (docker.errors.DockerException, StepFailed):
            pass  # the running image is gone or has no such directory: nothing to compare with
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
    downs = down_steps(client, backend_ref, env.target.migrations_dir, pending)
    detail = f"{len(pending)} pending: {', '.join(pending)}" if pending else f"none pending ({len(in_image)} in the image, all applied)"
    if downs.without():
        detail += f"; no down step: {', '.join(downs.without())}"
    if downs.unknown():
        detail += (f"; down step unknown for {', '.join(downs.unknown())} ({downs.unknown_why}): an undo of it "
                   "would be verified as it runs")
    facts = dict(in_image=in_image, applied=applied, pending=pending, unknown=unknown, without_down=downs.without(),
                 down_unknown=downs.unknown(), edited=edited)
    if edited:
        detail += (f"; {', '.join(edited)} already applied and changed since the running version: Sequelize does not "
                   "run an applied migration again, so the change never reaches the database; put it in a new migration")
    if unknown:
        detail += f"; the database has migrations this image does not know: {', '.join(unknown)}"
    return MigrationPlan(detail=detail, warning=bool(edited or unknown), **facts)


def confirm_migrations(env: Environment, plan: MigrationPlan) -> Finding:
    applied = applied_migrations(env, CONFIRM_STEP)
    missing = [m for m in plan.pending if m not in applied]
    if missing:
        raise StepFailed(CONFIRM_STEP, f"not applied after launch: {', '.join(missing)} (see the backend's log)")
    return Finding(detail=f"applied: {', '.join(plan.pending)}" if plan.pending else "nothing to apply")


plan_migrations_task = runbook_task(GUARD_STEP, timeout_s=120, retries=2)(plan_migrations)
confirm_migrations_task = runbook_task(CONFIRM_STEP, timeout_s=60, retries=2)(confirm_migrations)
