"""Typed errors. Each names the step (or setting) and the reason, and never a secret.

Messages are built by hand from safe parts; callers raise them `from None` so that
the chained low-level exception (which may quote a connection string) is not
logged by Prefect's traceback.
"""


class ConfigError(Exception):
    """Bad input: a missing or unreadable env file, an invalid setting. Exit code 2."""


class StepFailed(Exception):
    """A runbook step or check failed for a named reason."""

    def __init__(self, step: str, reason: str, *, transient: bool = False):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        # Worth retrying (a refused connection, a timeout), unlike a bad certificate.
        self.transient = transient

    def __reduce__(self):  # keep `transient` across pickling (Prefect may pickle exceptions)
        return (_rebuild_step_failed, (self.step, self.reason, self.transient))


def _rebuild_step_failed(step: str, reason: str, transient: bool) -> StepFailed:
    return StepFailed(step, reason, transient=transient)
