"""wait-ready: every container of the project running (and healthy, where it has a
health check, unless RELEASE_EDGE=dns: there not unhealthy) and `/ready` answering
200 through the public URL, or where the edge answers it with a page, on each backend
container's own address (tasks/routes.py).

Polls fast at first and backs off to POLL_CAP_S, so readiness is seen within about
a quarter of a second of becoming true. A container that exits or restarts fails
the step at once, with its last log lines; so does one whose health check fails
after it has answered its ready path on its own address (tasks/probe.py). One that
is unhealthy and has not answered yet fails once it has stayed unhealthy for
RELEASE_UNHEALTHY_GRACE_S: a good one whose entrypoint runs its migrations before it
listens can fail its checks on a loaded machine and turn healthy a moment later, and
failing it at once rolled back a good release.
"""

import time

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.tasks import routes
from smartrelease.tasks.edge_class import edge_of
from smartrelease.blocks.app_contract import AppContract
from smartrelease.tasks.probe import Probe, answer, failed, probe_for, why_unasked
from smartrelease.adapters.http import client
from smartrelease.adapters.images import engine
from smartrelease.adapters.running import logs_tail, running_services
from smartrelease.tasks.runbook_task import runbook_task

STEP = "wait-ready"
POLL_FIRST_S = 0.05
POLL_CAP_S = 0.25


def _broken(services, restarts: dict[str, int], unhealthy_since: dict[str, float], now: float,
            grace_s: float, ready_at: dict[str, tuple[Probe, float]] | None = None,
            contract: AppContract | None = None) -> tuple[str, str] | None:
    """(service, why) for the first container that has failed for good
    (tasks/probe.py). Restarts count from the first look: a container launch left
    alone may have old ones. `unhealthy_since` (container id -> when first seen
    unhealthy) is kept up to date; `ready_at`: container id -> its probe and when it
    first answered it with 200; `contract`: to say what to set when one could not be
    asked."""
    for s in services.values():
        if s.health != "unhealthy":
            unhealthy_since.pop(s.id, None)
        unhealthy_s = now - unhealthy_since.setdefault(s.id, now) if s.health == "unhealthy" else None
        probe, at = (ready_at or {}).get(s.id, (None, None))
        if why := failed(s, restarts.get(s.id, s.restarts), unhealthy_s=unhealthy_s, grace_s=grace_s,
                         ready_at=at, probe=probe, unasked=why_unasked(contract, s) if contract else ""):
            return s.service, why
    return None


def _ask(contract: AppContract, services, ready_at: dict[str, tuple[Probe, float]]) -> None:
    """Ask each running app container that has not yet answered its ready path on its
    own address with 200; note when one does."""
    for s in services.values():
        if s.id not in ready_at and s.status == "running" and (probe := probe_for(contract, s)):
            if answer(probe, s.address) == 200:
                ready_at[s.id] = (probe, time.time())


def wait_ready(env: Environment) -> Finding:
    docker = engine(timeout_s=30)
    started = time.monotonic()
    deadline = started + env.target.ready_timeout_s
    delay, waiting_for = POLL_FIRST_S, "containers"
    restarts: dict[str, int] = {}
    unhealthy_since: dict[str, float] = {}
    ready_at: dict[str, tuple] = {}
    was_unhealthy: set[str] = set()
    # Behind an edge that does not read Docker's health status (RELEASE_EDGE=dns or
    # static), it routes nothing and its first check may be a whole interval away:
    # /ready is the proof.
    waits_for = ("starting", "unhealthy") if edge_of(env).kind == "discovery" else ("unhealthy",)
    with client(env.target, timeout_s=2) as web:  # one connection for every poll, not a TLS handshake each
        while True:
            services = running_services(docker, env)
            if not services:
                raise StepFailed(STEP, f"no containers in compose project {env.target.compose_project}")
            for s in services.values():
                restarts.setdefault(s.id, s.restarts)
            was_unhealthy.update(s.service for s in services.values() if s.health == "unhealthy")
            _ask(env.target, services, ready_at)
            if broken := _broken(services, restarts, unhealthy_since, time.monotonic(), env.target.unhealthy_grace_s,
                                 ready_at, env.target):
                name, why = broken
                logs = logs_tail(docker, services[name].id)
                raise StepFailed(STEP, f"{name} container {why}; last log lines:\n{logs}")
            starting = [s.service for s in services.values() if s.status != "running" or s.health in waits_for]
            if starting:
                waiting_for = "containers: " + ", ".join(f"{n} {services[n].health or services[n].status}" for n in starting)
            else:
                try:  # through the public URL, or where the edge routes it elsewhere, on the backend's own address
                    answer = routes.get(env, env.target.ready_path, STEP, timeout_s=2, web=web)
                except StepFailed as exc:
                    if not exc.transient:
                        raise
                    waiting_for = exc.reason
                else:
                    if answer.response.status_code == 200:
                        took = time.monotonic() - started
                        recovered = f" ({', '.join(sorted(was_unhealthy))} unhealthy on the way)" if was_unhealthy else ""
                        return Finding(detail=f"ready after {took:.2f} s: {len(services)} containers running, "
                                              f"{env.target.ready_path} 200 {answer.route}{recovered}")
                    waiting_for = f"{env.target.ready_path} answered {answer.response.status_code} {answer.route}"
            if time.monotonic() + delay > deadline:
                raise StepFailed(STEP, f"not ready after {env.target.ready_timeout_s:.0f} s: waiting for {waiting_for}")
            time.sleep(delay)
            delay = min(delay * 2, POLL_CAP_S)


wait_ready_task = runbook_task(STEP, timeout_s=1800)(wait_ready)
