"""Runbook, rollback: `npm run db:rollback` in the backend container, once per
migration to undo, newest first; the backend is stopped first so that nothing
migrates or writes underneath.

The undo command (RELEASE_UNDO_COMMAND) runs in a one-off container of the backend
service (`compose run --no-deps`), from the image that applied the migrations: only
that image has their down steps. Each run must remove exactly the migration
expected from "SequelizeMeta"; anything else stops the undo.
"""

import shlex

from python_on_whales.exceptions import DockerException

from blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from tasks.launch import project_compose
from tasks.migrations import applied_migrations
from tasks.runbook_task import runbook_task

STOP_STEP = "stop-backend"
STEP = "undo-migrations"
STOP_TIMEOUT_S = 30


def stop_backend(env: Environment, images: dict[str, str]) -> Finding:
    with project_compose(env, images) as dc:
        try:
            dc.compose.stop(["backend"], timeout=STOP_TIMEOUT_S)
        except DockerException as exc:
            raise StepFailed(STOP_STEP, f"docker compose stop backend failed (exit {exc.return_code})") from None
    return Finding(detail="backend stopped: nothing migrates or writes while the database is changed")


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def undo_migrations(env: Environment, image_ref: str, to_undo: list[str]) -> Finding:
    """Undo `to_undo` (names), newest first, with the undo command of `image_ref`."""
    command = shlex.split(env.target.undo_command)
    done: list[str] = []
    with project_compose(env, {"backend": image_ref, "frontend": "unused"}) as dc:
        for name in sorted(to_undo, reverse=True):
            applied = applied_migrations(env, STEP)
            if name not in applied:
                done.append(f"{name} (already undone)")
                continue
            if applied[-1] != name:
                raise StepFailed(STEP, f"the newest applied migration is {applied[-1]}, not {name}: the undo command would "
                                       f"revert the wrong one; stopped after {', '.join(done) or 'nothing'}")
            try:
                output = dc.compose.run("backend", command[1:], entrypoint=command[0], remove=True,
                                        dependencies=False, tty=False)
            except DockerException as exc:
                out = _tail((exc.stdout or "") + "\n" + (exc.stderr or ""))
                raise StepFailed(STEP, f"`{env.target.undo_command}` failed on {name} (exit {exc.return_code}); "
                                       f"undone before it: {', '.join(done) or 'nothing'}\n{out}") from None
            if name in applied_migrations(env, STEP):
                raise StepFailed(STEP, f"`{env.target.undo_command}` exited 0 but {name} is still recorded as applied\n"
                                       f"{_tail(str(output))}")
            done.append(name)
    return Finding(detail=f"undone, newest first: {', '.join(done)}" if done else "nothing to undo")


stop_backend_task = runbook_task(STOP_STEP, timeout_s=120, retries=1)(stop_backend)
undo_migrations_task = runbook_task(STEP, timeout_s=900)(undo_migrations)
