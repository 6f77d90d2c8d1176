"""Turning task runs into the report's step results: timed, typed, redacted."""

import time
from collections.abc import Callable, Mapping

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed

from smartrelease.errors import StepFailed
from smartrelease.report import Finding, Status, StepResult


def failure_reason(exc: BaseException | None) -> str:
    if isinstance(exc, StepFailed):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}"
    return f"unexpected error: {type(exc).__name__}: {exc}"


def gather(futures: Mapping[str, PrefectFuture], redact: Callable[[str], str], started: float) -> list[StepResult]:
    """Wait for every future (none is abandoned when another fails) and return one
    result per step, in the order given. `started` is when they were submitted."""
    logger = get_run_logger()
    names = {f.task_run_id: name for name, f in futures.items()}
    done: dict[str, StepResult] = {}
    for future in as_completed(list(futures.values())):
        name = names[future.task_run_id]
        elapsed_ms = (time.monotonic() - started) * 1000
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, Finding):
            status = Status.WARNING if outcome.warning else Status.PASSED
            detail = outcome.detail
        else:
            status = Status.FAILED
            detail = failure_reason(outcome)
        done[name] = StepResult(name=name, status=status, detail=redact(detail), duration_ms=round(elapsed_ms, 1))
        level = {Status.PASSED: logger.info, Status.WARNING: logger.warning, Status.FAILED: logger.error}[status]
        level("%s %s: %s", name, status.value, done[name].detail)
    return [done[name] for name in futures]
