"""Launch as a health-gated cutover, so that a release (or a rollback) is invisible
to users, as Kamal and `docker rollout` do it:

1. start the new containers of the backend and frontend beside the old ones
   (`compose up --no-deps --no-recreate --scale SERVICE=2N`): the old ones keep
   serving, the database service is never touched;
2. wait until every new container is healthy (its Docker health check) and has not
   exited or restarted; one that fails, or is not healthy within
   RELEASE_READY_TIMEOUT_S, is removed with every other new one, and the old version
   goes on serving: nothing of the code needs rolling back;
3. let the edge find the new ones (RELEASE_EDGE_SETTLE_S: its discovery and health
   check interval), then drain the old ones: create RELEASE_DRAIN_FILE in them,
   which their health check fails on, wait until Docker reports them unhealthy and
   the edge has taken them out of its rotation (the settle time again), then tell
   them to stop (SIGTERM): in-flight requests have RELEASE_DRAIN_S to finish before
   Docker kills them; then they are removed.

That is for an edge that finds a service's containers itself and routes only to
healthy ones (RELEASE_EDGE=discovery: Traefik's Docker provider, the sandbox's
HAProxy). Nothing here rewrites its configuration. An edge that resolves the
service's name instead (RELEASE_EDGE=dns: Traefik's file provider, nginx) reads no
health status: step 2 probes each new container's ready path on its own address
(Probe), so a 30 s health-check interval costs nothing, and step 3 is
RELEASE_EDGE_SETTLE_S (the edge's re-resolution interval: it caches the answers) then
the SIGTERM, with no drain file (docs/zero-downtime.md).

A frontend that resolves the backend's name once, at its start
(RELEASE_FRONTEND_PINS_BACKEND: nginx's `proxy_pass http://backend:5000;`) keeps the
old backend's addresses: its new containers start once the new backend serves (they
resolve old and new), the old frontend stops before the old backend, and once the
old backend is gone the frontend is cut over again, to containers that resolve only
the new backend.

An edge that resolved the names once, at its start (RELEASE_EDGE=static), sees
no new container: every service is stopped first and the edge restarted after
(the plan names the downtime).

`--stop-first` is the old way, `compose up` recreating the
containers: the service is down until the new ones start.

Steps 1 to 3 are values (`cut_steps`: Start, Settle, Drain, Stop), decided before
anything runs and tested as such; `cut` runs them. Compose starts the new containers
(it alone knows the service's configuration); Docker Engine stops, drains and
removes the old ones by id (Compose acts on a whole service, never one container).
"""

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import docker

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.process import run
from smartrelease.report import Finding
from smartrelease.adapters.images import engine
from smartrelease.tasks.compose_checks import stop_first_services
from smartrelease.tasks.edge_class import EdgeClass, edge_of
from smartrelease.tasks.launch import STEP, compose_up, project_compose, start_database, team_config
from smartrelease.adapters.running import Container, logs_tail, service_containers
from smartrelease.tasks.probe import Probe, answer, failed, probe_for, probe_of_service, why_unasked
from smartrelease.tasks.runbook_task import runbook_task

POLL_S = 0.25
DRAIN_WAIT_S = 30  # for Docker to report a drained container unhealthy
KEPT_SERVING = "the old version kept serving; nothing to roll back for code"
# What the tool knows is what it did; what users saw depends on the edge, so the
# report says what an undrained stop does behind an edge of RELEASE_EDGE=discovery's kind.
UNDRAINED = ("Those stopped without leaving the edge's rotation first: an edge that routes by "
             "Docker's health status sent them requests until they stopped (and sent the new ones requests from "
             "their start, listening or not), and those failed unless it retried them elsewhere. Give the service "
             "a health check that honours RELEASE_DRAIN_FILE, or, if the edge resolves the service's name instead, "
             "set RELEASE_EDGE=dns")


@dataclass(frozen=True)
class ServiceCutover:
    """What the cutover does to one service: a pure value, decided before anything runs."""

    service: str
    image: str
    old: tuple[str, ...]  # running containers: they serve until the new ones do
    stale: tuple[str, ...]  # stopped ones: serve nothing, removed first (`up` would start them again)
    wanted: int = 1  # containers the service should run after: as many as ran of one version
    # Why two containers of it cannot run at once (a host port): the old ones are stopped
    # before the new ones start, and users get errors on it meanwhile. None: a cutover.
    stop_first: str | None = None

    @property
    def scale(self) -> int:
        """The count `compose up --scale` is given: the old ones and the new ones beside
        them (only the new ones for a service stopped first)."""
        if not self.old:
            return 1
        return self.wanted if self.stop_first else len(self.old) + self.wanted


def plan_cutover(containers: dict[str, list[Container]], images: dict[str, str],
                 stop_first: dict[str, str] | None = None, *, renew: frozenset[str] = frozenset(),
                 image_ids: dict[str, str | None] | None = None) -> list[ServiceCutover]:
    """`containers`: each app service's containers now; `images`: service -> the
    reference to run; `stop_first`: service -> why it cannot run twice; `image_ids`:
    service -> the local image id of its reference (None: not on this machine). A
    service already running only that image is left out, whatever reference its
    containers were created from (a tag, by hand), unless it is in `renew` (its
    containers are replaced by new ones of the same image)."""
    plan = []
    for service, image in images.items():
        found = containers.get(service, [])
        running = [c for c in found if c.status == "running"]
        wanted_id = (image_ids or {}).get(service)
        if (running and all(c.reference == image or (wanted_id and c.image_id == wanted_id) for c in running)
                and service not in renew):
            continue
        # A cutover interrupted (by a Docker Engine restart, say) leaves two versions
        # running: as many new ones as ran of one version, not of both.
        per_image = Counter(c.reference for c in running)
        plan.append(ServiceCutover(service, image, tuple(c.id for c in running),
                                   tuple(c.id for c in found if c.status != "running"),
                                   wanted=max(per_image.values(), default=1),
                                   stop_first=(stop_first or {}).get(service)))
    return plan


def leftovers(containers: dict[str, list[Container]], plan: list[ServiceCutover]) -> list[str]:
    """Containers that are not running, of services the plan leaves alone: an
    interrupted run's, which the engine or the next `compose up` would start again."""
    planned = {p.service for p in plan}
    return [c.id for service, found in containers.items() if service not in planned
            for c in found if c.status != "running"]


def probe_of(env: Environment, service: str, exposed: tuple[int, ...]) -> Probe:
    """The probe of a new container of `service` (the backend's or the frontend's: the
    cutover ships those two) exposing `exposed`; StepFailed naming the setting when its
    port is neither set nor the one its image exposes."""
    probe = probe_of_service(env.target, service, exposed)
    if probe is None:
        raise StepFailed(STEP, f"{service}: with RELEASE_EDGE=dns each new container is probed on its own address, "
                               f"and its port is unknown (its image exposes {', '.join(map(str, exposed)) or 'none'}): "
                               f"set RELEASE_{env.target.role_of(service).upper()}_PORT")
    return probe


def local_image_id(client: docker.DockerClient, reference: str) -> str | None:
    """The id of the image `reference` names on this machine; None when it is not here
    (`compose up` pulls it)."""
    try:
        return client.images.get(reference).id
    except docker.errors.ImageNotFound:
        return None


def planned_ports(client: docker.DockerClient, image: str, compose_service: dict) -> tuple[int, ...] | None:
    """The TCP ports a new container from `image` will expose: the image's own
    (EXPOSE) and the compose service's `expose:`; None while the image is not on this
    machine (`compose up` pulls it: its ports are read once the container runs)."""
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        return None
    return tcp_ports((found.attrs.get("Config") or {}).get("ExposedPorts") or {}, compose_service.get("expose") or [])


def tcp_ports(image_exposed, expose) -> tuple[int, ...]:
    """The TCP ports of an image's ExposedPorts ({"8080/tcp": {}}) and a compose
    service's `expose:` ("5000", "9000-9001", "53/udp")."""
    ports = {int(p.split("/")[0]) for p in image_exposed if p.endswith("/tcp")}
    for entry in expose:
        text = str(entry)
        if not text.endswith("/udp"):
            first, _, last = text.removesuffix("/tcp").partition("-")
            ports.update(range(int(first), int(last or first) + 1))
    return tuple(sorted(ports))


def wait_healthy(client: docker.DockerClient, env: Environment, new: dict[str, list[str]],
                 was_unhealthy: set[str], *, probed: bool = False) -> float:
    """Until every new container is healthy (running, without a health check), or with
    `probed` (RELEASE_EDGE=dns) answers its probe (Probe) on its own address; raises
    StepFailed naming the first that fails (tasks/probe.py: one that answers its ready
    path and then fails its health check is given no grace). Returns the seconds it took;
    `was_unhealthy` gets the services seen unhealthy on the way (within the grace)."""
    started = time.monotonic()
    deadline = started + env.target.ready_timeout_s
    first: dict[str, int] = {}
    unhealthy_since: dict[str, float] = {}
    ready_at: dict[str, float] = {}  # when each first answered its ready path with 200
    while True:
        waiting = []
        for service, ids in new.items():
            for cid in ids:
                try:
                    c = Container.of(client.containers.get(cid))
                except docker.errors.NotFound:
                    raise StepFailed(STEP, f"{service}: the new container {cid[:12]} disappeared") from None
                first.setdefault(cid, c.restarts)
                unhealthy_s = None
                if c.health == "unhealthy":
                    was_unhealthy.add(service)
                    now = time.monotonic()
                    unhealthy_s = now - unhealthy_since.setdefault(cid, now)
                else:
                    unhealthy_since.pop(cid, None)
                # Asked until it answers 200: behind a DNS edge that is when it serves;
                # behind any edge, a health check failing after it says it is broken.
                probe = probe_of(env, service, c.exposed) if probed else probe_for(env.target, c)
                if probe and cid not in ready_at and c.status == "running" and answer(probe, c.address) == 200:
                    ready_at[cid] = time.time()
                why = failed(c, first[cid], unhealthy_s=unhealthy_s, grace_s=env.target.unhealthy_grace_s,
                             ready_at=ready_at.get(cid), probe=probe, unasked=why_unasked(env.target, c))
                if why:
                    raise StepFailed(STEP, f"{service} container {why} (a new one)\n{logs_tail(client, cid)}")
                if probed:
                    if cid not in ready_at:
                        waiting.append(f"{service} {c.status}, {probe} not 200 yet")
                elif c.status != "running" or c.health in ("starting", "unhealthy"):
                    waiting.append(f"{service} {c.health or c.status}")
        if not waiting:
            return time.monotonic() - started
        if time.monotonic() + POLL_S > deadline:
            raise StepFailed(STEP, f"the new containers were not healthy after {env.target.ready_timeout_s:.0f} s: "
                                   + ", ".join(waiting))
        time.sleep(POLL_S)


def remove(client: docker.DockerClient, ids, *, grace_s: float = 0) -> None:
    """Stop (SIGTERM, then SIGKILL after `grace_s`) and remove, all at once."""
    def one(cid: str) -> None:
        try:
            c = client.containers.get(cid)
            if grace_s:
                c.stop(timeout=int(grace_s))
            c.remove(force=True)
        except docker.errors.NotFound:
            pass

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, ids))


def drain(client: docker.DockerClient, ids, drain_file: str) -> str:
    """Fail the health check of each old container (its health check must honour
    `drain_file`) and wait until Docker reports them unhealthy; what happened, for the
    report. One without a health check, or whose check ignores the file, is stopped
    undrained: its new containers counted as ready once running, perhaps before they
    listen, and the edge saw neither change coming."""
    started, undrained = time.monotonic(), []
    waiting = []
    for cid in ids:
        try:
            c = client.containers.get(cid)
            if Container.of(c).health is None:
                undrained.append(f"{c.name} has no health check")
                continue
            code, _ = c.exec_run(["touch", drain_file])
            if code == 0:
                waiting.append(cid)
            else:
                undrained.append(f"{c.name}: touch {drain_file} exited {code}")
        except docker.errors.APIError as exc:
            undrained.append(f"{cid[:12]}: {exc.explanation or exc}")
    while waiting and time.monotonic() - started < DRAIN_WAIT_S:
        time.sleep(POLL_S)
        for cid in list(waiting):
            try:
                if Container.of(client.containers.get(cid)).health == "unhealthy":
                    waiting.remove(cid)
            except docker.errors.NotFound:
                waiting.remove(cid)
    undrained += [f"{cid[:12]}'s health check ignored {drain_file} for {DRAIN_WAIT_S} s" for cid in waiting]
    took = time.monotonic() - started
    return f"drained in {took:.1f} s" if not undrained else f"not all drained ({'; '.join(undrained)})"


def other_services(env: Environment, app: list[str]) -> list[str]:
    """The project's services that are neither the app's nor the database (the edge)."""
    listed = run(project_compose(env).services()).stdout.split()
    return [s for s in listed if s not in app and s != env.target.database_service]


def start_beside(client: docker.DockerClient, env: Environment, images: dict[str, str],
                 plan: list[ServiceCutover], grace_s: float) -> dict[str, list[str]]:
    """Step 1: the new containers of each planned service, beside the old ones
    (service -> their ids); a service stopped first has its old ones stopped (SIGTERM,
    then SIGKILL after `grace_s`) and removed before. On failure no new one is left behind."""
    project, name = project_compose(env, images), env.target.compose_project

    def new_ones() -> dict[str, list[str]]:
        return {p.service: [c.id for c in service_containers(client, name, p.service) if c.id not in p.old]
                for p in plan}

    try:
        if env.target.database_service:
            start_database(env)
        remove(client, [cid for p in plan for cid in p.stale])
        remove(client, [cid for p in plan if p.stop_first for cid in p.old], grace_s=grace_s)
        run(project.up([p.service for p in plan], no_deps=True, no_recreate=True,
                       scale={p.service: p.scale for p in plan}))
    except CommandFailed as exc:
        remove(client, [cid for ids in new_ones().values() for cid in ids])
        raise StepFailed(STEP, str(exc)) from None
    return new_ones()


def restart_static_edge(env: Environment, images: dict[str, str], edge: EdgeClass, app: list[str]) -> str:
    """An edge that resolved the app's names once (RELEASE_EDGE=static) restarted, to
    resolve the new containers; what was done, for the report."""
    if edge.kind != "static":
        return ""
    services = list(edge.services) or other_services(env, app)
    started = time.monotonic()
    try:
        run(project_compose(env, images).restart(services, grace_s=int(env.target.drain_s)))
    except CommandFailed as exc:
        raise StepFailed(STEP, f"the edge ({', '.join(services)}) could not be restarted to find the new containers: "
                               f"{exc}") from None
    return f"; restarted the edge ({', '.join(services)}) in {time.monotonic() - started:.1f} s, as it resolves names once"


def kept_serving(plan: list[ServiceCutover]) -> str:
    """What serves after a cutover that failed before the old containers were drained."""
    stopped = [p.service for p in plan if p.stop_first and p.old]
    if not stopped:
        return KEPT_SERVING
    return (f"{', '.join(stopped)} had been stopped first (it cannot run twice): down until the previous version is "
            "launched again")


def stopped_first_note(plan: list[ServiceCutover], stopped_at: float, healthy_at: float) -> str:
    """For the report: the services stopped first, why, and for how long users got errors."""
    stopped = [p for p in plan if p.stop_first and p.old]
    return "".join(f"; {p.service} stopped first ({p.stop_first}): down {healthy_at - stopped_at:.1f} s, users got "
                   "errors on it meanwhile" for p in stopped)


def waves(plan: list[ServiceCutover], backend_first: str | None) -> list[list[ServiceCutover]]:
    """The order in which the new containers start: all at once, or, for a frontend
    that resolves the backend once at its start, `backend_first` (the backend's
    service) alone first: a new frontend must find the new backend among the
    addresses it resolves."""
    first = [p for p in plan if p.service == backend_first]
    if not first or len(first) == len(plan):
        return [plan]
    return [first, [p for p in plan if p.service != backend_first]]


def stop_order(plan: list[ServiceCutover], frontend: str) -> list[list[str]]:
    """The old containers to stop, in order: the frontend's before the rest, so that
    no old frontend outlives a backend it sends requests to."""
    old = [p for p in plan if not p.stop_first and p.old]
    groups = [[cid for p in old if p.service == frontend for cid in p.old],
              [cid for p in old if p.service != frontend for cid in p.old]]
    return [g for g in groups if g]


@dataclass(frozen=True)
class Start:
    """Step 1 for one wave: the stale containers removed, the old ones of a service
    stopped first stopped (SIGTERM, then SIGKILL after `grace_s`) and removed, then
    `compose up --no-deps --no-recreate --scale` starts the new ones beside the others;
    the step ends once every new one is healthy, or serves (`probed`)."""

    wave: tuple[ServiceCutover, ...]
    grace_s: float
    probed: bool


@dataclass(frozen=True)
class Settle:
    """A wait for the edge: it finds the new containers, or lets go of the old ones."""

    seconds: float


@dataclass(frozen=True)
class Drain:
    """The old containers' health check failed (RELEASE_DRAIN_FILE), until Docker says so."""

    ids: tuple[str, ...]
    drain_file: str


@dataclass(frozen=True)
class Stop:
    """Old containers told to stop (SIGTERM, then SIGKILL after `grace_s`), and removed."""

    ids: tuple[str, ...]
    grace_s: float


def cut_steps(plan: list[ServiceCutover], edge_kind: str, target, backend_first: str | None) -> list:
    """Steps 1 to 3 of the module's docstring as values, in order, for `plan` (whose
    services all have old containers serving) behind an edge of `edge_kind`."""
    probed = edge_kind != "discovery"  # the edge reads no health status: each new container probed on its own address
    steps: list = [Start(tuple(wave), target.drain_s, probed) for wave in waves(plan, backend_first)]
    order = stop_order(plan, target.frontend_service)
    if not probed and order:
        old = tuple(cid for group in order for cid in group)
        steps += [Settle(target.edge_settle_s), Drain(old, target.drain_file), Settle(target.edge_settle_s)]
    elif edge_kind == "dns" and order:
        # The new ones are in Docker's answers, but an edge caches them (HAProxy's
        # `hold valid`, nginx's `resolver valid=`): until it asks again it knows only
        # the old ones, and stopping them would leave it nothing to route to.
        steps.append(Settle(target.edge_settle_s))
    return steps + [Stop(tuple(group), target.drain_s) for group in order]


def cutover(env: Environment, images: dict[str, str]) -> Finding:
    """`images`: role -> reference. See the module's docstring."""
    client = engine(timeout_s=env.target.drain_s + 60)
    t = env.target
    by_service = {t.service(role): ref for role, ref in images.items()}
    found = {s: service_containers(client, t.compose_project, s) for s in by_service}
    try:
        config = team_config(env)  # read once: the edge's class, what cannot run twice, the ports
    except CommandFailed:
        config = {}  # preflight names it, and `compose up` fails on it
    edge = edge_of(env, config)
    stop_first = stop_first_services(env, config)
    # The same image under another reference (a tag, as a deploy by hand has it) is
    # what the release wants: replacing it would only churn containers, in a rollback too.
    ids = {s: local_image_id(client, ref) for s, ref in by_service.items()}
    plan = plan_cutover(found, by_service, stop_first, image_ids=ids)
    # A frontend that resolved the backend's name once holds the old backend's
    # addresses: it is replaced with the backend, and again once the old one is gone.
    pinned = (t.frontend_pins_backend and t.frontend_service in by_service
              and any(p.service == t.backend_service and p.old for p in plan))
    if pinned:
        plan = plan_cutover(found, by_service, stop_first, renew=frozenset({t.frontend_service}), image_ids=ids)
    if edge.kind != "discovery":  # a probe whose port cannot be known fails here, before anything is started
        services = config.get("services") or {}
        for p in plan:
            if p.old and (ports := planned_ports(client, p.image, services.get(p.service) or {})) is not None:
                probe_of(env, p.service, ports)
    left = leftovers(found, plan)
    remove(client, left)
    tidied = f"; removed {len(left)} stopped container(s) an interrupted run left" if left else ""
    if not plan:
        return Finding(detail="already running " + ", ".join(by_service) + f" at these digests: nothing to start{tidied}")
    if not any(p.old for p in plan):  # nothing serves: start it all, as a first deploy does
        remove(client, [cid for p in plan for cid in p.stale])
        compose_up(env, images)
        restarted = restart_static_edge(env, images, edge, list(by_service))
        return Finding(detail="nothing was serving: started " + ", ".join(p.service for p in plan) + restarted)

    done = cut(client, env, images, plan, edge, backend_first=t.backend_service if pinned else None, tidied=tidied)
    if not pinned:
        return done
    frontend = t.frontend_service
    again = plan_cutover({frontend: service_containers(client, t.compose_project, frontend)},
                         {frontend: by_service[frontend]}, stop_first, renew=frozenset({frontend}))
    try:
        renewed = cut(client, env, images, again, edge, backend_first=None)
    except StepFailed as exc:
        # The new version serves: the frontend left holds the old backend's address
        # beside the new one's, and waits out a connection to it before trying the other.
        return Finding(warning=True, detail=f"{done.detail}; then {frontend} could not be replaced again, so it "
                                            f"still holds the old backend's address (RELEASE_FRONTEND_PINS_BACKEND): "
                                            f"{exc.reason.partition(chr(10))[0]}; release again to replace it")
    return Finding(warning=done.warning or renewed.warning,
                   detail=f"{done.detail}; then {frontend} replaced again, to resolve only the new backend "
                          f"(RELEASE_FRONTEND_PINS_BACKEND): {renewed.detail.removeprefix('cut over ')}")


def cut(client: docker.DockerClient, env: Environment, images: dict[str, str], plan: list[ServiceCutover],
        edge: EdgeClass, *, backend_first: str | None, tidied: str = "") -> Finding:
    """Run cut_steps for `plan`; StepFailed, with every new container removed, when a
    new one fails before any old one is told to stop. `tidied`: what was done before,
    for the report."""
    t = env.target
    steps = cut_steps(plan, edge.kind, t, backend_first)
    probed = edge.kind != "discovery"
    stopped_at = time.monotonic()
    new: dict[str, list[str]] = {}
    was_unhealthy: set[str] = set()
    healthy_s, healthy_at, stop_started = 0.0, 0.0, None
    # The edge resolves the name: the new ones are in Docker's answers since they
    # started, and in the edge's once it asks again (the Settle); an old one told to
    # stop refuses new connections at once and leaves the answers when it exits
    # (docs/zero-downtime.md). No health check to wait for.
    drained = "told to stop (SIGTERM)"
    for step in steps:
        match step:
            case Start(wave=wave, grace_s=grace_s, probed=probe):
                try:
                    started = start_beside(client, env, images, list(wave), grace_s)
                    new |= started
                    healthy_s += wait_healthy(client, env, started, was_unhealthy, probed=probe)
                except StepFailed as exc:
                    remove(client, [cid for ids in new.values() for cid in ids])
                    head, _, logs = exc.reason.partition("\n")
                    raise StepFailed(STEP, f"{head}; removed the new containers: {kept_serving(plan)}"
                                           + (f"; last log lines:\n{logs}" if logs else "")) from None
                healthy_at = time.monotonic()
            case Settle(seconds=seconds):
                time.sleep(seconds)
            case Drain(ids=ids, drain_file=drain_file):
                drained = drain(client, ids, drain_file)
            case Stop(ids=ids, grace_s=grace_s):
                stop_started = stop_started or time.monotonic()
                remove(client, ids, grace_s=grace_s)
    stopped_s = time.monotonic() - stop_started if stop_started else 0.0
    by_service = {t.service(role): ref for role, ref in images.items()}
    restarted = restart_static_edge(env, images, edge, list(by_service))
    # Users get errors on a service stopped first until its new container serves, and
    # behind a static edge until the edge has been restarted.
    stopped_first = stopped_first_note(plan, stopped_at, time.monotonic() if restarted else healthy_at)
    if others := other_services(env, list(by_service)):  # the edge, started if it is not running; never recreated
        run(project_compose(env, images).up(others, no_deps=True, no_recreate=True))
    return Finding(detail="cut over " + ", ".join(f"{p.service} ({len(p.old)} old -> {len(new[p.service])} new)"
                                                  for p in plan)
                          + (f": new serving after {healthy_s:.1f} s (each answered its ready path on its own address)"
                             if probed else f": new healthy after {healthy_s:.1f} s")
                          + (f" ({', '.join(sorted(was_unhealthy))} unhealthy on the way)" if was_unhealthy else "")
                          + (f"; old {drained}, stopped and removed in {stopped_s:.1f} s" if stop_started else "")
                          + f"{stopped_first}{restarted}{tidied}"
                          + (f". {UNDRAINED}" if drained.startswith("not") else ""),
                   warning=drained.startswith("not") or bool(stopped_first))


def launch(env: Environment, images: dict[str, str], stop_first: bool = False) -> Finding:
    """The cutover; with `stop_first`, the runbook's `compose up`, which stops the old
    containers before the new ones start (a release that cannot run beside the old
    version): the service is down until wait-ready passes, and the report says so."""
    if not stop_first:
        return cutover(env, images)
    compose_up(env, images)
    restart_static_edge(env, images, edge_of(env), [env.target.service(role) for role in images])
    return Finding(warning=True, detail="stop-first: compose up stopped the old containers before starting "
                                        + ", ".join(f"{s} {ref.rsplit('@', 1)[-1][:19]}…" for s, ref in images.items())
                                        + ": users get errors until wait-ready passes")


launch_task = runbook_task(STEP, timeout_s=1800)(launch)
