"""The Prefect decorator every runbook action wears: a name, a timeout, retries
for transient failures only, and no result caching (inputs hold secrets)."""

import logging
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.states import State

from smartrelease.errors import StepFailed


class _ThreadTimeoutNotice(logging.Filter):
    """Prefect warns on every threaded task run that its timeout cannot interrupt
    blocking I/O. Every blocking call in tasks/ carries its own timeout (connect,
    HTTP, subprocess), so the task timeout is only a backstop and the notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread. Timeouts in worker threads" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())


def only_transient(task, task_run, state: State) -> bool:
    """Retry a StepFailed marked transient, and unexpected errors, but never a
    definite answer such as an expired certificate or a missing variable."""
    try:
        state.result()
    except StepFailed as exc:
        return exc.transient
    except Exception:
        return True
    return False


def runbook_task(name: str, *, timeout_s: float, retries: int = 0, retry_delay_s: float = 1.0) -> Callable[[Callable[..., Any]], Any]:
    return task(
        name=name,
        task_run_name=name,
        timeout_seconds=timeout_s,
        retries=retries,
        retry_delay_seconds=retry_delay_s,
        retry_condition_fn=only_transient,
        cache_policy=NONE,
        persist_result=False,
    )
