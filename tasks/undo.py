"""Runbook, rollback: `npm run db:rollback` in the backend container, once per
migration to undo, newest first; the backend is stopped first so that nothing
migrates or writes underneath.

The undo command (RELEASE_UNDO_COMMAND) runs in a one-off container of the backend
service (`compose run --no-deps`), from the image that applied the migrations: only
that image has their down steps. Each run must remove exactly the migration
expected from the migrations table, and nothing else may change there; anything
else stops the undo.
"""

import shlex

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.process import run
from smartrelease.report import Finding
from smartrelease.adapters.images import engine
from smartrelease.tasks.launch import project_compose
from smartrelease.adapters.running import service_containers
from smartrelease.tasks.migrations import applied_migrations
from smartrelease.tasks.runbook_task import runbook_task

STOP_STEP = "stop-backend"
STEP = "undo-migrations"
STOP_TIMEOUT_S = 30


def stop_backend(env: Environment, images: dict[str, str], keep_target: bool = False) -> Finding:
    """`keep_target`: a backend that already runs the rollback's own image (a release
    whose new containers never became healthy, so the old ones kept serving) is left
    serving: it ran before the migrations being undone, and under the expand/contract
    rule it runs with or without them."""
    if keep_target and (running := serving_images(env)) and running == {images["backend"]}:
        return Finding(detail="not stopped: the backend already runs the rollback's version, which ran before "
                              "these migrations; it goes on serving while they are undone")
    try:
        run(project_compose(env, images).stop([env.target.backend_service], grace_s=STOP_TIMEOUT_S))
    except CommandFailed as exc:
        raise StepFailed(STOP_STEP, str(exc)) from None
    return Finding(detail="backend stopped: nothing migrates or writes while the database is changed")


def serving_images(env: Environment) -> set[str]:
    """The image references the backend's running containers were created from."""
    found = service_containers(engine(timeout_s=30), env.target.compose_project, env.target.backend_service)
    return {c.reference for c in found if c.status == "running"}


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def unexpected_change(before: list[str], after: list[str], name: str) -> str | None:
    """What is wrong with the migrations table after undoing `name`, or None: exactly
    `name` must have gone, and nothing else."""
    problems = []
    if name in after:
        problems.append(f"{name} is still recorded as applied")
    if also_gone := [m for m in before if m not in after and m != name]:
        problems.append(f"it also removed {', '.join(also_gone)}")
    if added := [m for m in after if m not in before]:
        problems.append(f"{', '.join(added)} appeared")
    return "; ".join(problems) or None


def undo_migrations(env: Environment, image_ref: str, to_undo: list[str]) -> Finding:
    """Undo `to_undo` (names), newest first, with the undo command of `image_ref`."""
    command = shlex.split(env.target.undo_command)
    done: list[str] = []
    project = project_compose(env, {"backend": image_ref})
    for name in sorted(to_undo, reverse=True):
        applied = applied_migrations(env, STEP)
        if name not in applied:
            done.append(f"{name} (already undone)")
            continue
        if applied[-1] != name:
            raise StepFailed(STEP, f"the newest applied migration is {applied[-1]}, not {name}: the undo command would "
                                   f"revert the wrong one; stopped after {', '.join(done) or 'nothing'}")
        try:
            result = run(project.run(env.target.backend_service, command), check=False)
        except CommandFailed as exc:  # did not start, or ran out of time
            raise StepFailed(STEP, f"{exc}; undone before it: {', '.join(done) or 'nothing'}") from None
        if result.returncode != 0:
            out = _tail(result.stdout + "\n" + result.stderr)
            raise StepFailed(STEP, f"`{env.target.undo_command}` failed on {name} (exit {result.returncode}); "
                                   f"undone before it: {', '.join(done) or 'nothing'}\n{out}")
        if problem := unexpected_change(applied, applied_migrations(env, STEP), name):
            raise StepFailed(STEP, f"`{env.target.undo_command}` exited 0 but {problem}; undone before it: "
                                   f"{', '.join(done) or 'nothing'}\n{_tail(result.stdout)}")
        done.append(name)
    return Finding(detail=f"undone, newest first: {', '.join(done)}" if done else "nothing to undo")


stop_backend_task = runbook_task(STOP_STEP, timeout_s=120, retries=1)(stop_backend)
undo_migrations_task = runbook_task(STEP, timeout_s=900)(undo_migrations)
