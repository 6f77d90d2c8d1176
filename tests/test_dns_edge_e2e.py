"""A release behind an edge that resolves the service names through Docker's DNS
(RELEASE_EDGE=dns), with the health checks teams really have.

The sandbox's edge in EDGE_MODE=dns stands in for Traefik's file provider
(`http://backend:5000`): it reads no health status and has no Docker socket; it
resolves the names every second and reuses kept-alive connections, with Go's two
safety nets (a refused connection tried on another address, a GET a reused
connection closed unanswered sent again). It routes only /api to the backend, as
the runbook's Traefik does: /health and /ready on the public URL reach the
frontend, a single-page app that answers any path with its page. The backend's
health check is a plain `curl -f …/health` at a 5 min interval, with no drain hook;
the frontend has none. Nothing here waits for Docker's health status: the first
check of a new container comes 5 min after it starts.
"""

import time
from dataclasses import replace

import docker
import pytest

from smartrelease.record.history import last_release
from smartrelease.sandbox.load import Load, check_writes
from smartrelease.sandbox.stacks import Stack, put
from smartrelease.report import Status
from smartrelease.adapters.postgres import connect
from smartrelease.adapters.running import docker_time, service_containers
from tests.conftest import by_name
from tests.release_sandbox import module_sandbox

pytestmark = pytest.mark.e2e
ENV = "dnsedge"
RATE = 40  # requests/s: bounded (this module runs beside the others), and every second of a gap is seen
PATH = "/api/accounts"  # reads the database
# Its first health check of a new backend comes 5 min after it starts: nothing waits for it.
STACK = Stack(edge="dns", health="plain", interval="5m")


@pytest.fixture(scope="module")
def sandbox(shared_registry):
    with module_sandbox("smartrelease-dns-edge-e2e", ENV, registry=shared_registry) as sb:
        compose = sb.app_dir / "docker-compose.prod.yml"
        sb.original_compose = compose.read_text()
        put(STACK, compose, sb.original_compose, sb.settings.env_file, ENV)
        yield sb


def load(sandbox) -> Load:
    env = sandbox.env()
    return Load(env.target.public_url + PATH, rate=RATE, ca=env.target.ca_bundle, max_s=300)


def what_failed(sandbox, *loads: Load) -> str:
    """For a failure's message: the failed requests, and a timeline of what the app's
    containers and the edge did meanwhile (HAProxy's termination flags name the side
    that closed a session that went wrong), in the machine's clock."""
    env, client = sandbox.env(), docker.from_env()
    project = env.target.compose_project
    to_wall = time.time() - time.monotonic()
    lines = [(s.sent + to_wall, f"request {s.outcome} after {s.latency_s:.3f} s")
             for load in loads for s in load.samples if s.failed]
    began = min(load.started for load in loads) + to_wall
    for event in client.events(since=int(began) - 1, until=int(time.time()) + 1, decode=True, filters={
            "type": "container", "label": f"com.docker.compose.project={project}"}):
        if event["Action"] in ("create", "start", "kill", "die", "stop", "destroy"):
            attrs = event["Actor"]["Attributes"]
            lines.append((event["timeNano"] / 1e9, f"{attrs.get('com.docker.compose.service')} "
                          f"{event['id'][:8]} {event['Action']} {attrs.get('signal', '')}"))
    for c in service_containers(client, project, "edge"):
        logged = client.containers.get(c.id).logs(timestamps=True, since=int(began) - 1)
        for line in logged.decode(errors="replace").splitlines():
            stamp, _, text = line.partition(" ")
            # HAProxy's termination flags: "----" for a session that ended normally (logged for its retries).
            if " ---- " not in text and "[WARNING]" not in text:
                lines.append((docker_time(stamp), f"edge: {text}"))
    timeline = "\n".join(f"{time.strftime('%H:%M:%S', time.gmtime(t))}.{int(t % 1 * 1000):03d} {text}"
                          for t, text in sorted(lines))
    return " | ".join(load.failed_line() for load in loads) + f"\ntimeline:\n{timeline}"


def stops(sandbox, load: Load) -> list[tuple[float, float]]:
    """Each app container's stop during `load`, in time.monotonic(): (told to stop, exited)."""
    client, project = docker.from_env(), sandbox.env().target.compose_project
    to_mono = time.monotonic() - time.time()
    told, exited = {}, {}
    for event in client.events(since=int(load.started - to_mono) - 1, until=int(time.time()) + 1, decode=True,
                               filters={"type": "container", "event": ["kill", "die"],
                                        "label": f"com.docker.compose.project={project}"}):
        if event["Actor"]["Attributes"].get("com.docker.compose.service") in ("backend", "frontend"):
            at = {"kill": told, "die": exited}[event["Action"]]
            at.setdefault(event["id"], event["timeNano"] / 1e9 + to_mono)
    return [(told[c], exited[c]) for c in told if c in exited]


def during_a_stop(sample, stops: list[tuple[float, float]], slack_s: float = 0.25) -> bool:
    """Whether the request failed between a container's stop signal and a moment after
    its exit (Docker stamps the signal's event once it is sent: 50 ms before it too)."""
    failed_at = sample.sent + sample.latency_s
    return any(told - 0.05 <= failed_at <= exited + slack_s for told, exited in stops)


def app_containers(sandbox) -> dict[str, list[str]]:
    env, client = sandbox.env(), docker.from_env()
    return {s: sorted(c.id for c in service_containers(client, env.target.compose_project, s))
            for s in ("backend", "frontend")}


def test_a_release_that_starts_slowly_is_served_as_soon_as_it_answers_and_drops_no_request(sandbox):
    """Its backend listens 3 s after it starts: Docker's DNS gives its address at once,
    and the edge's connections to it are refused until then (tried on the old one)."""
    before = app_containers(sandbox)
    with load(sandbox) as traffic:
        state, report, _ = sandbox.release("6.1.0", faults=["slow-start 3"])
    assert state.is_completed(), report.text()
    stats = traffic.stats()
    assert stats.requests > 5 * RATE and stats.failed == 0, stats.line() + "\n" + what_failed(sandbox, traffic)
    launch = by_name(report)["launch"]
    assert launch.status == Status.PASSED and "each answered its ready path on its own address" in launch.detail, \
        launch.detail
    assert "told to stop (SIGTERM)" in launch.detail and "drain" not in launch.detail, launch.detail
    # /health and /ready reach the frontend's page through the public URL: asked of the backend itself.
    steps = by_name(report)
    for step in ("wait-ready", "smoke /health", "smoke /ready"):
        assert "on the backend's own address (1 container(s), port 8080)" in steps[step].detail, steps[step].detail
    assert steps["smoke /api/auth/health"].detail.endswith("through the public URL"), steps["smoke /api/auth/health"].detail
    # Not held to Docker's health status: the new backend's first check is minutes away.
    client = docker.from_env()
    [new_backend] = service_containers(client, sandbox.env().target.compose_project, "backend")
    assert new_backend.health == "starting", new_backend
    after = app_containers(sandbox)
    assert all(not set(after[s]) & set(before[s]) and len(after[s]) == 1 for s in after), (before, after)


def test_a_release_that_crashes_on_start_leaves_exactly_the_old_containers_serving(sandbox):
    before = app_containers(sandbox)
    version = last_release(ENV)["version"]
    with load(sandbox) as traffic:
        state, report, _ = sandbox.release("6.2.0", faults=["crash-on-start"])
    assert state.is_failed()
    stats = traffic.stats()
    assert stats.requests > 2 * RATE and stats.failed == 0, stats.line() + "\n" + what_failed(sandbox, traffic)
    launch = by_name(report)["launch"]
    assert launch.status == Status.FAILED and "(a new one)" in launch.detail, launch.detail
    assert "the old version kept serving" in launch.detail, launch.detail
    assert app_containers(sandbox) == before
    assert last_release(ENV)["version"] == version


def test_a_broken_health_endpoint_behind_the_page_is_caught_on_the_backends_own_address(sandbox):
    """The public URL answers /health with the frontend's page (200) whatever the
    backend says: the smoke check asks the backend itself, and fails on its 500."""
    with load(sandbox) as traffic:
        state, report, _ = sandbox.release("6.3.0", faults=["health-fails"])
    assert state.is_failed()
    smoke = by_name(report)["smoke /health"]
    assert smoke.status == Status.FAILED, smoke
    assert "/health answered HTTP 500, on the backend's own address" in smoke.detail, smoke.detail
    rb = report.facts.rollback
    assert rb.recovered, report.text()
    stats = traffic.stats()
    assert stats.failed == 0, stats.line() + "\n" + what_failed(sandbox, traffic)


def test_a_backend_port_that_cannot_be_known_fails_the_launch_before_any_container_is_created(sandbox):
    """The stand-in's image exposes no port: without RELEASE_BACKEND_PORT nothing tells
    where to probe a new backend, which is found before `compose up`."""
    client = docker.from_env()
    before = app_containers(sandbox)
    since = int(time.time()) - 1  # (this machine's clock is Docker Engine's)
    sandbox.set_env("RELEASE_BACKEND_PORT", None)
    try:
        state, report, _ = sandbox.release("6.4.0")
    finally:
        sandbox.set_env("RELEASE_BACKEND_PORT", "8080")
    assert state.is_failed()
    launch = by_name(report)["launch"]
    assert launch.status == Status.FAILED and launch.detail == (
        "backend: with RELEASE_EDGE=dns each new container is probed on its own address, and its port is unknown "
        "(its image exposes none): set RELEASE_BACKEND_PORT"), launch.detail
    assert app_containers(sandbox) == before
    created = list(client.events(since=since, until=int(time.time()) + 1, decode=True, filters={
        "type": "container", "event": "create",
        "label": f"com.docker.compose.project={sandbox.env().target.compose_project}"}))
    assert created == [], created


@pytest.mark.parametrize("connect_timeout", ["1s", ""])
def test_a_frontend_that_resolves_the_backend_once_is_replaced_around_it_and_fails_nothing_if_it_gives_up_quickly(
        sandbox, connect_timeout):
    """The frontend's nginx proxies /api to `backend:8080`, resolved once at its start
    (no resolver), and the edge sends everything to the frontend, as the invoicing
    team's stack does. An old frontend holds only the old backend's address, so it
    must be gone before that backend is; a new one started beside the old backend
    holds both, so it is replaced once more when the old backend is gone
    (RELEASE_FRONTEND_PINS_BACKEND). Between the two, a request it sends to the old
    backend's address waits until it gives up and tries the new one: with
    `proxy_connect_timeout 1s` (RELEASE_FRONTEND_CONNECT_TIMEOUT_S=1) no read
    fails, and no write but one the edge sent on a kept-alive connection just as an
    old frontend stopped, which no cutover can hide. With nginx's 60 s, some did: the
    plan says users may get errors (docs/zero-downtime.md, both). Either way no write is lost or made twice. Every request below
    passes through the frontend to the backend and the database; some write (a POST
    no edge may send twice)."""
    put(replace(STACK, pinned=True, connect_timeout=connect_timeout), sandbox.app_dir / "docker-compose.prod.yml",
        sandbox.original_compose, sandbox.settings.env_file, ENV)
    before = app_containers(sandbox)
    env = sandbox.env()
    tag = f"pinned{int(time.time())}"
    with load(sandbox) as traffic, Load(env.target.public_url + PATH, rate=RATE / 4, ca=env.target.ca_bundle,
                                        max_s=300, post_as=tag) as writes:
        state, report, _ = sandbox.release("6.5.1" if connect_timeout else "6.5.0")
    assert state.is_completed(), report.text()
    stats, written = traffic.stats(), writes.stats()
    assert stats.requests > 5 * RATE, stats.line()
    # Each POST answered 201 left exactly one row: none lost, none sent twice.
    with connect(env, "test") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM accounts WHERE name LIKE %s", (f"{tag}-%",))]
    rows = check_writes(writes.samples, names)
    assert rows.lost == 0 and rows.doubled == 0, rows.line()
    plan = by_name(report)["rollback-plan"]
    risk = "RELEASE_FRONTEND_PINS_BACKEND: the frontend resolves the backend once, at its start"
    if connect_timeout:
        # A write the edge sends on a kept-alive connection just as an old container's
        # graceful stop closes it is reset unread: no edge may send a POST twice (HAProxy
        # closes the client's connection, Traefik answers 502), and it was not applied
        # (rows.unanswered). Any other failed request is a defect.
        stopping = stops(sandbox, writes)
        stray = [s for s in writes.samples if s.failed and not (
            s.outcome in ("RemoteProtocolError", "502") and during_a_stop(s, stopping))]
        assert stats.failed == 0 and not stray and rows.unanswered == 0, "\n".join(
            (stats.line(), written.line(), what_failed(sandbox, traffic, writes)))
        assert risk not in plan.detail, plan.detail
    else:
        assert plan.status == Status.WARNING and risk in plan.detail and "(RELEASE_FRONTEND_CONNECT_TIMEOUT_S: unset, " \
            "nginx's 60 s assumed)" in plan.detail, plan.detail
    launch = by_name(report)["launch"]
    assert "frontend replaced again, to resolve only the new backend" in launch.detail, launch.detail
    after = app_containers(sandbox)
    assert all(not set(after[s]) & set(before[s]) and len(after[s]) == 1 for s in after), (before, after)
    client = docker.from_env()
    [frontend] = after["frontend"]
    code, conf = client.containers.get(frontend).exec_run(["cat", "/tmp/nginx.conf"])
    assert code == 0 and b"proxy_pass http://backend:8080;" in conf and b"resolver" not in conf, conf
    assert (f"proxy_connect_timeout {connect_timeout};".encode() in conf) == bool(connect_timeout), conf


def test_behind_a_static_edge_the_plan_names_the_downtime_and_the_edge_is_restarted_onto_the_new_version(sandbox):
    """An edge that resolved the names once, at its start (HAProxy without resolvers,
    its config file mounted from beside the compose file), never sees a new
    container. The release reads that from the compose file (RELEASE_EDGE unset),
    says in its plan that users will get errors, stops the app first and restarts
    the edge; verify, through the edge, then finds the new version."""
    put(replace(STACK, edge="static"), sandbox.app_dir / "docker-compose.prod.yml", sandbox.original_compose,
        sandbox.settings.env_file, ENV)
    with load(sandbox) as traffic:
        state, report, _ = sandbox.release("6.6.0")
    assert state.is_completed(), report.text()
    steps = by_name(report)
    plan = steps["rollback-plan"].detail
    assert "edge: static (detected: service edge runs " in plan and "has servers and no resolvers" in plan, plan
    assert "backend stopped first: users get errors on it for about 1 s" in plan, plan  # not its 5 min check
    launch = steps["launch"]
    assert launch.status == Status.WARNING, launch.detail
    assert "backend stopped first (the edge resolved its address once, at its start: it is restarted after): down " \
        in launch.detail, launch.detail
    assert "users got errors on it meanwhile" in launch.detail and "restarted the edge (edge) in " in launch.detail, \
        launch.detail
    assert steps["verify"].status == Status.PASSED, steps["verify"].detail
    # The downtime the plan named was real: it is not hidden by a retry.
    assert traffic.stats().failed > 0, traffic.stats().line()
