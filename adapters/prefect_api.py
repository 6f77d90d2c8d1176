"""Every Prefect internal this project relies on, in one place: what is not Prefect's
public API (a helper of `pause_flow_run`, a log line's text or arguments), so that an
upgrade of Prefect is checked here, and its tests, first.

Measured against Prefect 3.9. Elsewhere the code uses Prefect's public API only
(`get_client`, states, artifacts, variables, blocks, `concurrency`, `runtime`), and
`deployments/server.py` serves `prefect.server.api.server.create_app` for TLS, as
`prefect server start` serves it without.
"""

import functools
import logging
from contextlib import contextmanager

# Prefect itself is imported inside the functions that use it: the CLI installs the
# exit-notice filter first thing, and refuses bad input before seconds of importing
# Prefect (smartrelease/cli.py).

# The log lines of Prefect's that say nothing to a reader of ours; each filter drops
# those lines only (a Prefect that words them otherwise lets them through: noise,
# never a lost line).
THREAD_TIMEOUT_NOTICE = "running in a worker thread. Timeouts in worker threads"  # prefect.task_runs
STILL_PROCESSING = "Still processing items"  # EventsWorker, APILogWorker at exit
SLOT_SERVICE_FAILURE = "Service %r failed to process item %r"  # prefect._internal.concurrency
SLOT_SERVICE = "ConcurrencySlotAcquisitionWithLeaseService"


def pause(client, flow_run_id, timeout_s: float, key: str) -> dict:
    """Propose the run Paused for input, as `pause_flow_run(wait_for_input=…)` does, but
    without its waiting (the approval waits itself, with a deadline of its own); the
    keyset under which the input is saved and read. RuntimeError if the server did
    not pause it. `client`: a sync Prefect client."""
    from prefect.input import keyset_from_paused_state
    from prefect.states import Paused
    from prefect.utilities.engine import propose_state_sync

    proposed = Paused(timeout_seconds=round(timeout_s), reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    state = propose_state_sync(client=client, state=proposed, flow_run_id=flow_run_id)
    if not state.is_paused():
        raise RuntimeError(f"the run could not pause for its approval (the server answered {state.type.value})")
    return keyset


class _ThreadTimeoutNotice(logging.Filter):
    """Prefect warns on every threaded task run that its timeout cannot interrupt
    blocking I/O. Every blocking call in tasks/ carries its own time limit (connect
    and HTTP timeouts, docker-py's, each subprocess's: smartrelease.process, compose),
    so the task timeout is only a backstop and the notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return THREAD_TIMEOUT_NOTICE not in record.getMessage()


class _OneShotSlotRefusals(logging.Filter):
    """Prefect's slot service logs an ERROR for every refused attempt, the one-shot
    ones (max_retries=0) included, whose refusal the lock handles and reports
    itself: those records are dropped, every other one kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        one_shot = len(args) == 2 and args[0] == SLOT_SERVICE \
            and isinstance(args[1], tuple) and len(args[1]) > 3 and args[1][3] == 0
        return not (record.msg == SLOT_SERVICE_FAILURE and one_shot)


def _not_still_processing(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(STILL_PROCESSING)


# One of each: logging adds a filter once only if it is the same object, and both the
# lock and every task call quiet_task_notices().
_THREAD_TIMEOUT_NOTICE, _ONE_SHOT_SLOT_REFUSALS = _ThreadTimeoutNotice(), _OneShotSlotRefusals()


def quiet_task_notices() -> None:
    """Drop the threaded task runs' timeout notice and the lock's one-shot refusals."""
    logging.getLogger("prefect.task_runs").addFilter(_THREAD_TIMEOUT_NOTICE)
    logging.getLogger("prefect._internal.concurrency").addFilter(_ONE_SHOT_SLOT_REFUSALS)


def quiet_exit_notices() -> None:
    """At exit Prefect's event and log workers send what is still queued, and say
    "Still processing items: N items remaining..." on standard error while they do:
    that line would follow a command's one-line error. The sending goes on; only the
    notice is dropped."""
    for name in ("EventsWorker", "APILogWorker"):
        logging.getLogger(name).addFilter(_not_still_processing)


@contextmanager
def without_flow_heartbeat():
    """Flow runs started in this block have no Prefect heartbeat thread. The run's end
    joins that thread, which sleeps in steps of 1 s: up to a second on every command
    (docs/benchmarks-floor.md). Heartbeats feed an automation, if someone made one,
    that marks a run whose process died as crashed (Prefect's "detect zombie flows";
    this project makes none). A command's run has its terminal watching it, and the
    environment's lock its own heartbeat (record/lock.py); runs on a worker keep
    Prefect's. Only code can turn it off: the environment variable takes an integer
    of 30 or more."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@functools.cache
def _flow_class():
    from prefect.flows import Flow
    from pydantic_core import to_jsonable_python

    class JsonParametersFlow(Flow):
        """A flow whose run records its parameters with pydantic's encoder. Prefect's
        `Flow.serialize_parameters` imports FastAPI's `jsonable_encoder` for it (the
        web framework entire: 0.15 s of every run's creation, docs/benchmarks.md);
        this project's flows take JSON values only (str, bool, None, a dict of str), on
        which both give the same. A value neither can encode is recorded as
        "<TypeName>", as Prefect does."""

        def serialize_parameters(self, parameters: dict) -> dict:
            return {key: to_jsonable_python(value, fallback=lambda v: f"<{type(v).__name__}>")
                    for key, value in parameters.items()}

    return JsonParametersFlow


def flow(**options):
    """`prefect.flow(**options)` for this project's flows (see _flow_class)."""
    return lambda fn: _flow_class()(fn=fn, **options)
