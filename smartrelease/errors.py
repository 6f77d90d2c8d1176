"""Typed errors. Each names the step (or setting) and the reason, and never a secret:
the text is masked when the error is created (smartrelease.redact), so every copy
Prefect makes of it (state message, event, log line, traceback) is already safe.

Callers raise them `from None` so that the chained low-level exception (which may
quote a connection string) is not logged by Prefect's traceback.
"""

from smartrelease.redact import mask


class ConfigError(Exception):
    """Bad input: a missing or unreadable env file, an invalid setting. Exit code 2."""

    def __init__(self, message: str):
        super().__init__(mask(message))


class StepFailed(Exception):
    """A runbook step or check failed for a named reason."""

    def __init__(self, step: str, reason: str, *, transient: bool = False):
        reason = mask(reason)
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        # Worth retrying (a refused connection, a timeout), unlike a bad certificate.
        self.transient = transient

    def __reduce__(self):  # keep `transient` across pickling (Prefect may pickle exceptions)
        return (_rebuild_step_failed, (self.step, self.reason, self.transient))


def _rebuild_step_failed(step: str, reason: str, transient: bool) -> StepFailed:
    return StepFailed(step, reason, transient=transient)


class CommandFailed(Exception):
    """A program this tool ran (initdb, pg_dump, docker compose, ...) failed: its name,
    exit code and the lines of its standard error that name the cause."""

    def __init__(self, command: str, exit_code: int | None, cause: str):
        self.command = command
        self.exit_code = exit_code
        self.cause = mask(cause)
        how = "timed out" if exit_code is None else f"failed (exit {exit_code})"
        super().__init__(f"{command} {how}: {self.cause}" if self.cause else f"{command} {how}")

    def __reduce__(self):
        return (CommandFailed, (self.command, self.exit_code, self.cause))
