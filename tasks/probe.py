"""A container of the app judged on its own address: whether it serves yet, or has
failed for good. The cutover judges each new container this way, and wait-ready
every container of the app.

Docker's health status alone cannot tell a slow starter from a broken container: a
good backend that runs its migrations before it listens fails its health check as
surely as one whose /health answers 500. RELEASE_UNHEALTHY_GRACE_S covers the first,
and delayed the second by as much (goal 4 of issue 33). The container's own answer
to its ready path tells them apart:

- once it has answered 200 there, it has started: if Docker then calls it unhealthy
  and a health check that began after that answer failed, it fails now;
- until then (no answer, or 503 and the like while it starts) an unhealthy one is
  given the grace.

A status alone is not enough: a container unpaused, or one whose check timed out on a
loaded machine, is unhealthy for a moment while it answers 200, and turns healthy
at its next check (the shared test sandbox, thawed, was failed so).
"""

from dataclasses import dataclass

import httpx

from smartrelease.blocks.app_contract import AppContract
from smartrelease.adapters.http import http_client
from smartrelease.adapters.running import Container, http_url

TIMEOUT_S = 1.0  # a container's own ready path: it answers at once, or is not serving yet


@dataclass(frozen=True)
class Probe:
    """GET `path` on a container's own address and `port`; 200 is yes. Docker's
    health status can lag by a whole check interval (30 s is common), and an edge
    that resolves names does not read it."""

    port: int
    path: str

    def url(self, address: str) -> str:
        return http_url(address, self.port, self.path)

    def __str__(self) -> str:
        return f"GET :{self.port}{self.path}"


def probe_for(contract: AppContract, c: Container) -> Probe | None:
    """The probe of `c`, a container of the backend or the frontend; None for another
    service, or when its port is neither set nor the one its image exposes."""
    return probe_of_service(contract, c.service, c.exposed)


def probe_of_service(contract: AppContract, service: str, exposed: tuple[int, ...]) -> Probe | None:
    """The probe of a container of `service` exposing `exposed` (probe_for)."""
    role = contract.role_of(service)
    port = contract.listen_port(role, exposed) if role else None
    return Probe(port, contract.ready_path_of(role)) if port else None


def why_unasked(contract: AppContract, c: Container) -> str:
    """For a container of the app that cannot be probed (its port unknown), what to
    set so that the next one is; "" for any other."""
    role = contract.role_of(c.service)
    if role is None or probe_for(contract, c):
        return ""
    return (f"; its port is unknown (its image exposes {', '.join(map(str, c.exposed)) or 'none'}), so it was not "
            f"asked its ready path to tell a broken container from a slow starter: set RELEASE_{role.upper()}_PORT")


def answer(probe: Probe, address: str | None) -> int | None:
    """The status `probe` got on `address`; None when nothing answered."""
    if not address:
        return None
    try:
        with http_client("", timeout_s=TIMEOUT_S) as web:
            return web.get(probe.url(address)).status_code
    except httpx.HTTPError:
        return None


def failed(c: Container, first_restarts: int, *, unhealthy_s: float | None, grace_s: float,
           ready_at: float | None = None, probe: Probe | None = None, unasked: str = "") -> str | None:
    """Why `c` has failed for good, or None while it may still come up (see the
    module's docstring). `first_restarts`: its restart count at the first look;
    `unhealthy_s`: how long Docker has called it unhealthy (None: it does not);
    `ready_at`: when (seconds since the epoch) it first answered `probe` with 200 on
    its own address (None: not yet, or not asked); `unasked`: why_unasked, said when
    the grace runs out."""
    if c.status in ("exited", "dead", "restarting") or c.restarts > first_restarts:
        return f"{c.status}, restarted {c.restarts} time(s)"
    if unhealthy_s is None:
        return None
    # Only a check that ran to a failure after the 200 counts: one from before (it
    # was starting; it was paused) or one that timed out (exit -1) says nothing of it.
    after = [check for check in c.checks if ready_at is not None and check.started > ready_at and check.exit_code > 0]
    if after:
        return (f"unhealthy: its health check failed (exit {after[-1].exit_code}) after it answered {probe} with 200 "
                f"on its own address, so it is not starting but broken, and RELEASE_UNHEALTHY_GRACE_S does not apply")
    return f"unhealthy for {unhealthy_s:.0f} s{unasked}" if unhealthy_s >= grace_s else None
