"""One change at a time per environment: release, rollback, promote and the guard
hold the environment's lock while they run.

The lock is a Prefect global concurrency limit of one slot, `smartrelease-env-<env>`,
taken with `strict=True` (a missing limit is an error, never a run without a lock)
and a lease the holder renews: a holder killed outright frees the environment when
its lease runs out (`LEASE_S`, the server's minimum) instead of wedging it.
`smartrelease unlock` frees it at once.

The limit is created when the environment's blocks are saved. Prefect does not
tell a client who holds a slot, so the holder writes its name to a Prefect variable
(`smartrelease-lock-<env>`) for the runs waiting behind it to report.

A lease can run out under a holder that still runs: the server away for 15–60 s
around a renewal, and Prefect stops renewing for good. The slot is then free, but
the lock is not: the holder writes a heartbeat into its variable every HEARTBEAT_S
seconds, and a run that gets the slot while the variable still names a run that has
not ended watches it for ALIVE_WINDOW_S first. A heartbeat in that time means the
holder is alive: the slot is let go and the run waits on. The holder, finding the
slot free at a heartbeat, takes it again.
"""

import getpass
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError  # re-exported there
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.variables import Variable
from pydantic import BaseModel

from smartrelease.blocks.envfile import Environment, import_env_file
from smartrelease.adapters import prefect_api
from smartrelease.errors import ConfigError
from smartrelease.report import Status, StepResult

LEASE_S = 60  # the server's minimum; renewed every 15 s by Prefect while held
WAIT_TIMEOUT_S = 3600  # a run waits at most this long for the environment
POLL_S = 1  # how often a waiting run asks again for the slot, and says whom it waits for
HEARTBEAT_S = 5  # how often a holder says it is alive (and finds a lost slot to take again)
# How long a run that got the slot watches a named holder for a heartbeat before it
# judges it dead: after a server outage, a live holder writes within HEARTBEAT_S of the
# server's return (its writes do not wait in retries).
ALIVE_WINDOW_S = 3 * HEARTBEAT_S


UNNAMED = "a run that did not say who it is"


class Holder(BaseModel):
    """Who holds an environment's lock."""

    what: str  # "release-prod (flow run 3f…)" or "guard off by ops@host"
    flow_run_id: str = ""
    since: str = ""
    alive_at: str = ""  # its last heartbeat

    def same(self, other: "Holder | None") -> bool:
        return other is not None and (self.what, self.flow_run_id, self.since) == (other.what, other.flow_run_id,
                                                                                 other.since)

    def __str__(self) -> str:
        return f"{self.what}, since {self.since}" if self.since else self.what


class Locked(ConfigError):
    """The environment is being changed by another run (and this one would not wait)."""

    def __init__(self, environment: str, holder: Holder | None, why: str):
        super().__init__(f"{environment} is being changed by {holder or 'another run'}: {why}")
        self.holder = holder


def limit_name(environment: str) -> str:
    return f"smartrelease-env-{environment}"


def _variable(environment: str) -> str:
    return f"smartrelease-lock-{environment}"


def ensure_lock(environment: str) -> None:
    """Create the environment's limit (one slot) if the server has none."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(limit_name(environment))
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit_name(environment), limit=1))


def import_environment(path: str | os.PathLike, name: str | None = None) -> Environment:
    """An env file saved as the environment's blocks (`blocks.import_env_file`), and
    the environment's lock made with them if the server has none."""
    env = import_env_file(path, name)
    ensure_lock(env.name)
    return env


def held(environment: str) -> bool:
    """Whether the environment's slot is taken; ConfigError when it has no lock."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(limit_name(environment))
        except ObjectNotFound:
            raise ConfigError(f"{environment} has no lock on this Prefect server: run `smartrelease blocks import "
                              f"--env-file FILE` (it creates {limit_name(environment)})") from None
    return limit.active_slots >= limit.limit


def holder(environment: str) -> Holder | None:
    """Who holds the lock now (None when it is free); the name is the one the holder
    wrote, or "another run" when it wrote none (it was killed before it could)."""
    if not held(environment):
        return None
    value = Variable.get(_variable(environment), default=None)
    try:
        return Holder.model_validate(value)
    except ValueError:
        return Holder(what=UNNAMED)


def me(default_what: str) -> Holder:
    """This process as a holder: its flow run if it is one."""
    from prefect.context import FlowRunContext

    since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    ctx = FlowRunContext.get()
    if ctx and ctx.flow_run:
        return Holder(what=f"{ctx.flow_run.name} (flow run {ctx.flow_run.id})", flow_run_id=str(ctx.flow_run.id),
                      since=since)
    return Holder(what=f"{default_what} by {getpass.getuser()}@{socket.gethostname()}", since=since)


@contextmanager
def environment_lock(environment: str, mine: Holder, *, wait: bool = True, timeout_s: float = WAIT_TIMEOUT_S,
                     on_wait: Callable[[Holder | None], None] = lambda holder: None,
                     on_dead_holder: Callable[[str], None] = lambda said: None) -> Iterator[float]:
    """Hold the environment's lock for the block; yields the seconds waited for it.
    Without `wait`, a held lock raises Locked at once; `on_wait` is told whom the run
    waits for, every POLL_S seconds; `on_dead_holder` what was found of a run that
    died holding the lock (see `bury`)."""
    started = time.monotonic()
    asked_again, alive, leave_until = False, None, 0.0
    while True:
        # After finding a live holder without a slot, leave the slot alone for two
        # heartbeats: the holder takes it again at its next one.
        slot = _take_slot(environment, mine) if time.monotonic() >= leave_until else None
        if slot is not None:
            alive = _alive_holder(environment, mine)
            if alive is None:
                break
            slot.close()  # its lease ran out under it, but it still runs: not ours yet
            leave_until = time.monotonic() + 2 * HEARTBEAT_S
            current = alive
        else:
            current = holder(environment) or alive
        if slot is None and (current is None or current.what == UNNAMED) and not asked_again:
            asked_again = True  # freed since the server said no, or taken and not yet named
            time.sleep(0.2)
            continue
        asked_again = False
        if not wait:
            raise Locked(environment, current, "not waiting (wait is off)")
        if time.monotonic() - started > timeout_s:
            raise Locked(environment, current, f"waited {timeout_s:g} s")
        on_wait(current)
        time.sleep(POLL_S)
    heartbeat = None
    try:
        if said := bury(environment, Variable.get(_variable(environment), default=None), mine):
            on_dead_holder(said)
        mine = mine.model_copy(update={"alive_at": _now()})
        Variable.set(_variable(environment), mine.model_dump(), overwrite=True)
        heartbeat = Heartbeat(environment, mine)
        yield round(time.monotonic() - started, 1)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        _let_go(environment, mine, slot)


def _take_slot(environment: str, mine: Holder) -> ExitStack | None:
    """The environment's slot, held until the stack is closed; None when it is taken.
    One attempt (max_retries=0): the server grants the slot or answers 423 at once, so
    the caller's wait, which says whom it waits for, is the only wait. A lease renewal
    that fails does not stop a release half-way (raise_on_lease_renewal_failure=False):
    that would be worse; the heartbeat takes the slot again instead."""
    holder_ref = ConcurrencyLeaseHolder(type="flow_run", id=mine.flow_run_id) if mine.flow_run_id else None
    slot = ExitStack()
    try:
        slot.enter_context(concurrency(limit_name(environment), occupy=1, max_retries=0, lease_duration=LEASE_S,
                                       strict=True, holder=holder_ref, raise_on_lease_renewal_failure=False))
        return slot
    except ConcurrencySlotAcquisitionError as exc:
        if not _taken(exc):
            held(environment)  # names a missing limit as a ConfigError
            raise
    return None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _named(environment: str) -> Holder | None:
    try:
        value = Variable.get(_variable(environment), default=None)
        return Holder.model_validate(value) if value else None
    except ValueError:
        return None


def _alive_holder(environment: str, mine: Holder) -> Holder | None:
    """The slot is ours, yet the lock names a run that has not ended: is it alive (its
    lease ran out under it)? It is when it writes a heartbeat within ALIVE_WINDOW_S.
    Returns it then; None when the lock is free to take (no holder named, its run
    ended, or no heartbeat: `bury` then marks it)."""
    named = _named(environment)
    if named is None or named.same(mine) or not named.alive_at:  # (a holder from before heartbeats: bury judges it)
        return None
    if named.flow_run_id and not _unfinished(named.flow_run_id)[0]:
        return None
    deadline = time.monotonic() + ALIVE_WINDOW_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _named(environment)
        if now is None or not now.same(named):
            return None  # it let go meanwhile
        if now.alive_at != named.alive_at:
            return now
    return None


class Heartbeat:
    """The holder's heartbeat: every HEARTBEAT_S, its variable says it is alive, and a
    slot found free (its lease ran out) is taken again. A variable that no longer names
    it (`unlock` freed the environment) stops the heartbeat, said as an error."""

    def __init__(self, environment: str, mine: Holder):
        self.environment, self.mine = environment, mine
        self.lost: str | None = None
        self.retaken: list[ExitStack] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lock-heartbeat-{environment}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):  # a beat not sent is sent at the next one
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    self._beat()
                except Exception as exc:  # the server away, most often: the next beat tries again
                    _logger().debug("%s's lock: a heartbeat was not sent (%s)", self.environment, type(exc).__name__)
            for stack in self.retaken:
                _close_quietly(stack)

    def _beat(self) -> None:
        named = _named(self.environment)
        if not self.mine.same(named):
            self.lost = f"{self.environment}'s lock no longer names this run (now {named or 'nobody'}): unlocked"
            _logger().error("%s; another change may start while this one runs", self.lost)
            self._stop.set()
            return
        Variable.set(_variable(self.environment), {**self.mine.model_dump(), "alive_at": _now()}, overwrite=True)
        if not held(self.environment):
            slot = _take_slot(self.environment, self.mine)
            if slot is not None:
                self.retaken.append(slot)
                _logger().warning("%s's lock: its lease ran out while this run held it (the Prefect server was "
                                  "away); the slot is taken again", self.environment)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _close_quietly(stack: ExitStack) -> None:
    """Let a slot go; one whose lease ran out is gone already (the server says 404/410)."""
    try:
        stack.close()
    except (httpx.HTTPError, OSError) as exc:
        _logger().info("a slot's lease was gone already (%s)", type(exc).__name__)


def bury(environment: str, name: object, mine: Holder) -> str | None:
    """The lock is ours, yet still names a flow run as its holder: that run died
    holding it (SIGKILL, or its worker stopped) and its lease ran out. The server still
    shows it running, and nothing else will ever end it: it is marked Crashed, saying
    why. Returns what was found (None when the last holder let go)."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    try:
        dead = Holder.model_validate(name) if name else None
    except ValueError:
        return None
    if dead is None or not dead.flow_run_id or dead.flow_run_id == mine.flow_run_id:
        return None
    unfinished, state = _unfinished(dead.flow_run_id)
    if not unfinished:
        return None
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(dead.flow_run_id, Crashed(message=(
            f"its process ended while it held {environment}'s lock, without letting go (the lock's lease ran out); "
            f"found by {mine.what}")), force=True)
    was = state.type.value if state is not None else StateType.PENDING.value
    return f"{dead.what} died holding the lock (the server still showed it {was}): marked Crashed"


def _unfinished(flow_run_id: str) -> tuple[bool, object]:
    """(whether the server shows the run not ended, its state); a run the server does
    not know counts as ended."""
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(flow_run_id).state
        except (ObjectNotFound, ValueError):
            return False, None
    return not (state is not None and state.is_final()), state


def _let_go(environment: str, mine: Holder, slot: ExitStack) -> None:
    """Free the lock. A Prefect server that cannot be reached now (it went away during
    the run) is said, never raised: the run ends with its own outcome, and the slot is
    freed by its lease, LEASE_S after the server is back."""
    from smartrelease.record.journal import server_answers_within

    try:
        # Unless `unlock` took it meanwhile and another holder wrote its name. (Not
        # tried when the server is away: each call would spend Prefect's retries.)
        if server_answers_within(0) and mine.same(_named(environment)):
            Variable.unset(_variable(environment))
    except httpx.TransportError:
        pass  # the slot's release below fails the same way, and says so
    try:
        slot.close()  # always: it also stops the lease's renewal
    except httpx.TransportError as exc:
        _logger().warning("%s's lock was not freed: the Prefect server could not be reached (%s: %s); its lease "
                          "frees it %d s after the server is back", environment, type(exc).__name__, exc, LEASE_S)
    except httpx.HTTPStatusError as exc:  # its lease ran out and the heartbeat took a new one, freed above
        _logger().info("%s's first lease was gone already (%s)", environment, exc.response.status_code)


def _logger():
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("smartrelease.lock")


prefect_api.quiet_task_notices()  # Prefect's slot service logs each refusal the lock reports itself


def _taken(exc: ConcurrencySlotAcquisitionError) -> bool:
    """Whether the server refused the slot because it is taken (HTTP 423), not for
    another reason (no such limit, the server down)."""
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


def unlock(environment: str, reason: str) -> str:
    """Free the lock whoever holds it, and record it in the history with `reason`.
    The limit is deleted and made again, so a killed holder's lease, when it runs
    out, frees nothing of the next holder's. Returns a one-line account."""
    from smartrelease.record.history import append_row, event_row, last_release

    if not reason.strip():
        raise ConfigError("unlock needs a reason (--reason TEXT): it is recorded in the history")
    was = holder(environment)
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(limit_name(environment))
    ensure_lock(environment)
    by = me("unlock")
    bury(environment, Variable.get(_variable(environment), default=None), by)
    Variable.unset(_variable(environment))
    running = (last_release(environment) or {}).get("version", "none")
    append_row(environment, event_row(running, "unlocked", reason=reason.strip(), holder=str(was or "nobody"),
                                      triggered_by=by.what))
    return (f"{environment} unlocked (it was held by {was})" if was else f"{environment} was not locked; "
            "its lock was made again anyway") + "; recorded in the history"


LOCK_STEP = "lock"


@contextmanager
def flow_lock(environment: str, what: str, wait: bool = True) -> Iterator[StepResult]:
    """The lock, for a flow: held for the block, which gets the `lock` step's result
    (whom it waited for, and how long). The run's log says whom it waits for, once
    per holder."""
    from prefect import get_run_logger

    told: list[Holder | None] = []

    def waiting(current: Holder | None) -> None:
        if not told or told[-1] != current:
            told.append(current)
            get_run_logger().info("waiting for %s: %s is being changed by %s", environment, environment,
                                  current or "another run")

    started = time.monotonic()
    dead: list[str] = []
    with environment_lock(environment, me(what), wait=wait, on_wait=waiting, on_dead_holder=dead.append) as waited:
        ms = round((time.monotonic() - started) * 1000, 1)
        detail = (f"waited {waited:g} s for " + ", then ".join(str(h or "another run") for h in told)) if told \
            else f"{environment} was free"
        detail += "".join(f"; {d}" for d in dead)
        yield StepResult(name=LOCK_STEP, status=Status.PASSED, detail=detail, duration_ms=ms)
