"""The Prefect decorator every runbook action wears: a name, a timeout, retries
for transient failures only, no result caching (inputs hold secrets), and errors
that leave the task masked and typed."""

import functools
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.states import State

from smartrelease.errors import CommandFailed, ConfigError, StepFailed
from smartrelease.redact import install_log_masking
from smartrelease.adapters import prefect_api

install_log_masking()


prefect_api.quiet_task_notices()  # the timeout notice of threaded task runs: each blocking call has its own


def only_transient(task, task_run, state: State) -> bool:
    """Retry a StepFailed marked transient, and unexpected errors, but never a
    definite answer such as an expired certificate or a missing variable."""
    try:
        state.result()
    except StepFailed as exc:
        return exc.transient
    except ConfigError:  # a setting is wrong: the next try would be wrong the same way
        return False
    except Exception:
        return True
    return False


def masked_errors(step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, but any exception leaving it is a StepFailed (or ConfigError) whose text
    is masked: a third-party exception may quote a URL with its password, and Prefect
    copies an exception's text into the state message, the event and the log."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (StepFailed, ConfigError):
            raise
        except CommandFailed as exc:
            raise StepFailed(step, str(exc)) from None
        except Exception as exc:
            if engine_unreachable(exc):
                raise StepFailed(step, f"Docker Engine unreachable ({type(exc).__name__}: {exc}): is dockerd "
                                       "running?", transient=True) from None
            raise StepFailed(step, f"unexpected error: {type(exc).__name__}: {exc}", transient=True) from None

    return run


def engine_unreachable(exc: BaseException) -> bool:
    """docker-py's way of saying the engine's socket did not answer (it goes through requests)."""
    import requests

    return isinstance(exc, requests.exceptions.ConnectionError) or (
        type(exc).__module__.startswith("docker") and "Error while fetching server API version" in str(exc))


def runbook_task(name: str, *, timeout_s: float | None, retries: int = 0, retry_delay_s: float = 1.0) -> Callable[[Callable[..., Any]], Any]:
    def decorate(fn: Callable[..., Any]):
        return task(
            name=name,
            task_run_name=name,
            timeout_seconds=timeout_s,
            retries=retries,
            retry_delay_seconds=retry_delay_s,
            retry_condition_fn=only_transient,
            cache_policy=NONE,
            persist_result=False,
        )(masked_errors(name, fn))

    return decorate
