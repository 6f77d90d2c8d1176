"""What every runbook flow does around its steps, written once.

A flow started from a deployment acts only on its own environment (placement.py);
its blocks and inputs are checked before it waits for anything, so bad input is
refused at once; a flow that changes the environment then holds its lock, and reads
the blocks again under it: what was saved while it waited (a `guard off`) holds for
it. Its facts say who started it and with which version of this tool; a run that
nobody watches (a schedule, the UI, CI) tells the team when it fails.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.context import FlowRunContext

import smartrelease
from smartrelease.blocks import load_environment
from smartrelease.blocks.envfile import Environment
from smartrelease.flows.notify import notify_report
from smartrelease.flows.placement import check_placement
from smartrelease.flows.requester import triggered_by
from smartrelease.record.lock import flow_lock
from smartrelease.report import ReleaseFacts, Report, StepResult


def environment_of(environment: str) -> Environment:
    """The environment a run acts on, once its placement is checked."""
    check_placement(environment)
    return load_environment(environment)


@contextmanager
def locked_environment(environment: str, kind: str, wait: bool,
                       inputs: Callable[[Environment], Any] = lambda env: None
                       ) -> Iterator[tuple[Environment, Any, StepResult]]:
    """Placement, the blocks and `inputs(env)` (which raises ConfigError on bad input)
    checked before any wait; then the environment's lock, held for the block, which
    gets the environment read again, what `inputs` made of it, and the lock's step."""
    inputs(environment_of(environment))
    with flow_lock(environment, kind, wait) as lock_step:
        env = load_environment(environment)
        yield env, inputs(env), lock_step


def run_facts(**fields) -> ReleaseFacts:
    """A run's facts, with who triggered it and this tool's version."""
    return ReleaseFacts(triggered_by=triggered_by(), tool_version=smartrelease.__version__, **fields)


def notify_if_unwatched(env: Environment, report: Report, event: str) -> None:
    """A failed run started by a deployment (a schedule, the UI or CI) tells the team:
    nobody watches a terminal for it. One started in a terminal says it there."""
    if not report.ok and FlowRunContext.get().flow_run.deployment_id:
        notify_report(env, report, event)
