"""The cutover's decisions and commands as plain values, the load generator's
arithmetic, and the compose constraints read by the real `docker compose config`."""

import json
import stat

import pytest

from smartrelease.blocks.envfile import parse_env_file
from smartrelease.sandbox.load import Load, Sample, Writes, check_writes, percentile, summarize
from smartrelease.adapters.compose import ComposeProject
from smartrelease.errors import StepFailed
from smartrelease.process import run
from smartrelease.tasks.compose_checks import (cannot_run_twice, compose_problems, pinned_frontend_risk, compose_version_problems, downtime_s, duration_s,
                                  stop_first_services, stop_first_with_downtime)
from smartrelease.blocks.release_target import ReleaseTarget
from smartrelease.tasks.cutover import (Container, Drain, Settle, Start, Stop, cut_steps, kept_serving,
                                        leftovers, plan_cutover, probe_of, stop_order, stopped_first_note, tcp_ports, waves)
from smartrelease.adapters.running import address_of
from smartrelease.tasks.probe import Probe, failed
from smartrelease.tasks.environment import check_app_env
from smartrelease.tasks.launch import project_compose

OLD, NEW = "reg/backend@sha256:" + "a" * 64, "reg/backend@sha256:" + "b" * 64
WEB = "reg/frontend@sha256:" + "c" * 64


def container(cid: str, ref: str = OLD, status: str = "running", health: str | None = "healthy") -> Container:
    return Container(id=cid, name=cid, reference=ref, status=status, health=health, restarts=0)


def test_each_service_gets_twice_its_running_containers_beside_them_and_stopped_ones_are_removed_first():
    plan = plan_cutover({"backend": [container("b1"), container("b2"), container("b0", status="exited")]},
                        {"backend": NEW})
    assert [(p.service, p.old, p.stale, p.scale) for p in plan] == [("backend", ("b1", "b2"), ("b0",), 4)]


def test_a_service_already_running_the_wanted_image_is_left_alone_and_one_not_running_is_started_once():
    plan = plan_cutover({"backend": [container("b1", NEW)], "frontend": [container("f1", WEB, status="exited")]},
                        {"backend": NEW, "frontend": WEB})
    assert [(p.service, p.old, p.stale, p.scale) for p in plan] == [("frontend", (), ("f1",), 1)]
    # A service half on the new image (a cutover interrupted) is cut over again, whole,
    # to as many containers as ran of one version: one new beside the two, then one.
    plan = plan_cutover({"backend": [container("b1", NEW), container("b2", OLD)]}, {"backend": NEW})
    assert plan[0].old == ("b1", "b2") and plan[0].wanted == 1 and plan[0].scale == 3
    twice = plan_cutover({"backend": [container("b1", OLD), container("b2", OLD), container("b3", NEW)]}, {"backend": NEW})
    assert twice[0].wanted == 2 and twice[0].scale == 5


def test_a_service_running_the_wanted_image_under_a_tag_is_left_alone_but_not_another_image_under_it():
    by_tag = Container(id="b1", name="b1", reference="reg/backend:1.0.0", status="running", health="healthy",
                       restarts=0, image_id="sha256:" + "1" * 64)
    assert plan_cutover({"backend": [by_tag]}, {"backend": NEW}, image_ids={"backend": "sha256:" + "1" * 64}) == []
    assert plan_cutover({"backend": [by_tag]}, {"backend": NEW},
                        image_ids={"backend": "sha256:" + "2" * 64})[0].old == ("b1",)
    assert plan_cutover({"backend": [by_tag]}, {"backend": NEW}, image_ids={"backend": None})[0].old == ("b1",)


def test_a_frontend_that_pins_the_backend_starts_after_it_and_stops_before_it():
    """RELEASE_FRONTEND_PINS_BACKEND: the frontend on its unchanged image is renewed
    all the same, its new containers start once the new backend's serve, and its old
    ones stop before the old backend's."""
    found = {"backend": [container("b1")], "frontend": [container("f1", WEB)]}
    assert [p.service for p in plan_cutover(found, {"backend": NEW, "frontend": WEB})] == ["backend"]
    plan = plan_cutover(found, {"backend": NEW, "frontend": WEB}, renew=frozenset({"frontend"}))
    assert [(p.service, p.image, p.old, p.scale) for p in plan] == [("backend", NEW, ("b1",), 2),
                                                                    ("frontend", WEB, ("f1",), 2)]
    assert [[p.service for p in wave] for wave in waves(plan, "backend")] == [["backend"], ["frontend"]]
    assert [[p.service for p in wave] for wave in waves(plan, None)] == [["backend", "frontend"]]
    assert [[p.service for p in wave] for wave in waves(plan[1:], "backend")] == [["frontend"]]
    assert stop_order(plan, "frontend") == [["f1"], ["b1"]]
    assert stop_order(plan[:1], "frontend") == [["b1"]]


def test_stopped_containers_of_a_service_already_on_its_image_are_leftovers_to_remove():
    found = {"backend": [container("b1", NEW), container("b2", OLD, status="exited")],
             "frontend": [container("f1", OLD), container("f0", OLD, status="created")]}
    plan = plan_cutover(found, {"backend": NEW, "frontend": WEB})
    assert [p.service for p in plan] == ["frontend"] and plan[0].stale == ("f0",)
    assert leftovers(found, plan) == ["b2"]  # the frontend's stopped one goes with its cutover


def test_a_new_container_has_failed_for_good_once_it_exits_or_restarts():
    assert failed(container("n", status="running", health="starting"), 0, unhealthy_s=None, grace_s=10) is None
    assert failed(container("n", status="exited"), 0, unhealthy_s=None, grace_s=10) == "exited, restarted 0 time(s)"
    assert failed(Container("n", "n", NEW, "running", None, restarts=1), 0,
                  unhealthy_s=None, grace_s=10) == "running, restarted 1 time(s)"


def test_the_cutover_command_adds_containers_without_recreating_the_old_ones_or_touching_dependencies():
    project = ComposeProject("/srv/compose.yml", "books", {})
    argv = project.up(["backend", "frontend"], no_deps=True, no_recreate=True,
                      scale={"backend": 2, "frontend": 2}).argv
    assert argv[argv.index("up"):] == ("up", "--detach", "--quiet-pull", "--remove-orphans", "--no-deps",
                                       "--no-recreate", "--scale", "backend=2", "--scale", "frontend=2",
                                       "backend", "frontend")


def inspected(status="running", networks=None, project="books", exposed=("5000/tcp",)) -> dict:
    """The parts of `docker inspect` a Container is read from."""
    return {"State": {"Status": status}, "RestartCount": 0,
            "Config": {"Image": NEW, "Labels": {"com.docker.compose.project": project},
                       "ExposedPorts": {p: {} for p in exposed}},
            "NetworkSettings": {"Networks": networks if networks is not None else {
                "aaa_other": {"IPAddress": "172.30.0.9"}, "books_default": {"IPAddress": "172.20.0.5"}}}}


def test_a_container_is_reached_on_its_projects_default_network_and_only_while_it_runs():
    assert address_of(inspected()) == "172.20.0.5"  # the project's network, though another sorts first
    assert address_of(inspected(networks={"aaa_other": {"IPAddress": "172.30.0.9"}})) == "172.30.0.9"
    assert address_of(inspected(networks={"host": {"IPAddress": ""}})) == "127.0.0.1"
    assert address_of(inspected(status="exited")) is None
    assert address_of(inspected(networks={"books_default": {"IPAddress": ""}})) is None


def test_a_dns_edge_probes_a_new_container_on_its_port_as_set_or_as_its_image_exposes_it(write_env):
    class Found:  # what docker-py gives Container.of
        id = name = "n1"
        attrs = inspected(exposed=("5000/tcp", "9229/udp"))

    c = Container.of(Found)
    assert (c.address, c.exposed) == ("172.20.0.5", (5000,))
    env = parse_env_file(write_env(RELEASE_EDGE="dns", RELEASE_FRONTEND_READY_PATH="/index.html"))
    assert probe_of(env, "backend", c.exposed) == Probe(5000, "/ready")
    assert probe_of(env, "frontend", (80,)).url("172.20.0.6") == "http://172.20.0.6:80/index.html"
    assert Probe(8080, "/ready").url("fd00::5") == "http://[fd00::5]:8080/ready"
    with pytest.raises(StepFailed) as raised:
        probe_of(env, "backend", (5000, 9229))
    assert raised.value.reason == ("backend: with RELEASE_EDGE=dns each new container is probed on its own address, "
                                   "and its port is unknown (its image exposes 5000, 9229): set RELEASE_BACKEND_PORT")
    env = parse_env_file(write_env(RELEASE_EDGE="dns", RELEASE_BACKEND_PORT="5000"))
    assert probe_of(env, "backend", (5000, 9229)) == Probe(5000, "/ready")


def test_the_ports_a_new_container_will_expose_are_its_images_and_its_services_expose_tcp_ones():
    assert tcp_ports({"8080/tcp": {}, "53/udp": {}}, []) == (8080,)
    assert tcp_ports({}, ["5000", "9000-9002/tcp", "53/udp", 8080]) == (5000, 8080, 9000, 9001, 9002)
    assert tcp_ports({}, []) == ()


def test_a_static_edge_is_restarted_alone_not_the_services_it_depends_on():
    argv = ComposeProject("/srv/compose.yml", "books", {}).restart(["edge"], grace_s=30).argv
    assert argv[argv.index("restart"):] == ("restart", "--no-deps", "--timeout", "30", "edge")


def test_the_runbook_by_hand_builds_then_starts_with_one_up():
    argv = ComposeProject("/srv/compose.yml", "books", {}).up(build=True).argv
    assert argv[argv.index("up"):] == ("up", "--detach", "--quiet-pull", "--remove-orphans", "--build")


def test_the_rows_of_a_writing_load_tell_lost_doubled_and_unanswered_writes():
    # Request n is the n-th sent, whatever order the answers came in.
    samples = [Sample(3.0, 0.1, "201"), Sample(1.0, 0.1, "201"), Sample(2.0, 0.1, "ReadTimeout"),
               Sample(4.0, 0.1, "201"), Sample(5.0, 0.1, "503")]
    rows = check_writes(samples, ["t-0", "t-1", "t-1", "t-3", "t-4"])
    # 0, 2 and 3 were answered 201; 2 has no row; 1 has two; 1 and 4 were written unanswered
    assert rows == Writes(answered=3, lost=1, doubled=1, unanswered=2) and not rows.ok
    assert check_writes(samples, ["t-0", "t-2", "t-3"]) == Writes(3, 0, 0, 0)
    assert check_writes(samples, ["t-0", "t-2", "t-3"]).ok


def test_load_stats_count_5xx_and_errors_as_failures_and_take_the_nearest_rank_percentile():
    samples = [Sample(i, 0.010, "200") for i in range(97)] + [Sample(97, 1.0, "503"), Sample(98, 0.5, "ConnectError"),
                                                              Sample(99, 0.02, "404")]
    stats = summarize(samples, 1.0)
    assert (stats.requests, stats.failed, stats.failures) == (100, 2, {"503": 1, "ConnectError": 1})
    assert stats.p50_ms == 10.0 and stats.p99_ms == 500.0 and stats.max_ms == 1000.0
    assert percentile([], 99) == 0.0 and percentile([3.0], 99) == 3.0
    assert "2 failed (503 x1, ConnectError x1)" in stats.line()
    load = Load("https://127.0.0.1:1/", rate=1)
    load.started, load.samples = 90.0, samples
    assert load.failed_line() == "+7.0 s: 503 after 1.00 s; +8.0 s: ConnectError after 0.50 s"
    assert load.failed_line(limit=1) == "+7.0 s: 503 after 1.00 s; and 1 more"


def test_load_goes_only_to_this_machine_within_bounds():
    with pytest.raises(ValueError, match="only sent to this machine"):
        Load("https://accounting.example.com/api/accounts", rate=10)
    with pytest.raises(ValueError, match="rate must be"):
        Load("https://127.0.0.1:1/", rate=5000)
    with pytest.raises(ValueError, match="nice must be"):
        Load("https://127.0.0.1:1/", rate=10, nice=-40)


def test_a_service_with_a_host_port_or_the_hosts_network_cannot_run_twice_and_says_why():
    config = {"services": {"backend": {"container_name": "api", "ports": [{"target": 8080, "published": "8080"}]},
                           "frontend": {"ports": [{"target": 8081}]}, "edge": {"ports": [{"published": "443"}]},
                           "worker": {"network_mode": "host"}}}
    # (A container_name is the override's to take away; an unpublished port is no host's.)
    assert cannot_run_twice(config, ["backend", "frontend", "worker"]) == {
        "backend": "publishes host port(s) 8080", "worker": "uses network_mode: host"}


def test_a_service_that_cannot_run_twice_is_stopped_first_and_only_its_new_containers_are_counted():
    found = {"backend": [container("b1")], "frontend": [container("f1", WEB), container("f2", WEB)]}
    plan = plan_cutover(found, {"backend": NEW, "frontend": WEB.replace("c", "d")},
                        {"frontend": "publishes host port(s) 8080"})
    assert [(p.service, p.old, p.scale, p.stop_first) for p in plan] == [
        ("backend", ("b1",), 2, None), ("frontend", ("f1", "f2"), 2, "publishes host port(s) 8080")]
    assert stopped_first_note(plan, 10.0, 13.25) == (
        "; frontend stopped first (publishes host port(s) 8080): down 3.2 s, users got errors on it meanwhile")
    assert kept_serving(plan).startswith("frontend had been stopped first (it cannot run twice): down until")
    assert kept_serving(plan[:1]) == "the old version kept serving; nothing to roll back for code"


def test_a_service_stopped_first_is_down_about_its_stop_and_one_health_check_interval():
    # as `docker compose config --format json` writes them (Go's durations)
    assert [duration_s(t) for t in ("2s", "1m30s", "1.5s", "500ms", "1h", "", "2 s", "fast")] == [
        2, 90, 1.5, 0.5, 3600, None, None, None]
    assert downtime_s({"healthcheck": {"test": ["CMD", "true"], "interval": "2s"}}) == 3.0
    assert downtime_s({"healthcheck": {"test": ["CMD", "true"]}}) == 31.0  # Docker's default interval, 30 s
    assert downtime_s({"healthcheck": {"disable": True}}) == downtime_s({}) == 1.0
    # Behind an edge that reads no health status the cutover probes the container itself.
    assert downtime_s({"healthcheck": {"test": ["CMD", "true"], "interval": "5m"}}, probed=True) == 1.0


@pytest.mark.parametrize("setting", ["preferred", "required"])
def test_zero_downtime_required_refuses_a_host_port_and_preferred_plans_it_stop_first(write_env, tmp_path, setting):
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  backend:\n    image: ${BACKEND_IMAGE}\n"
                       "  frontend:\n    image: ${FRONTEND_IMAGE}\n    ports: ['127.0.0.1:18080:8081']\n")
    env = parse_env_file(write_env(RELEASE_COMPOSE_FILE=str(compose), RELEASE_COMPOSE_PROJECT="books",
                                   RELEASE_ZERO_DOWNTIME=setting))
    assert stop_first_services(env) == {"frontend": "publishes host port(s) 18080"}
    # no health check in the file: its stop alone
    assert stop_first_with_downtime(env) == ({"frontend": "publishes host port(s) 18080"}, {"frontend": 1.0})
    if setting == "preferred":
        assert compose_problems(env) == []
        return
    assert compose_problems(env) == [
        f"{compose}: frontend publishes host port(s) 18080: it cannot run twice at once, so a release would stop it "
        "first and users would get errors (RELEASE_ZERO_DOWNTIME=required): publish ports from the edge only, which "
        "routes by service name (docs/cutover.md)"]


@pytest.mark.parametrize("setting", ["preferred", "required"])
def test_a_static_edge_in_the_compose_file_stops_the_app_first_or_is_refused(write_env, tmp_path, setting):
    (tmp_path / "nginx.conf").write_text("events {}\nhttp { server { location / { proxy_pass http://frontend:80; } } }\n")
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  backend:\n    image: ${BACKEND_IMAGE}\n"
                       "    healthcheck: {test: [CMD, 'true'], interval: 30s}\n"
                       "  frontend:\n    image: ${FRONTEND_IMAGE}\n"
                       "  proxy:\n    image: nginx:1.27\n    ports: ['443:443']\n"
                       "    volumes: ['./nginx.conf:/etc/nginx/nginx.conf:ro']\n")
    env = parse_env_file(write_env(RELEASE_COMPOSE_FILE=str(compose), RELEASE_COMPOSE_PROJECT="books",
                                   RELEASE_ZERO_DOWNTIME=setting))
    why = "the edge resolved its address once, at its start: it is restarted after"
    # Each new container is probed on its own address: its 30 s health check is not waited for.
    assert stop_first_with_downtime(env) == ({"backend": why, "frontend": why}, {"backend": 1.0, "frontend": 1.0})
    problems = compose_problems(env)
    if setting == "preferred":
        assert problems == []
        return
    assert len(problems) == 1 and problems[0].startswith(
        f"edge: static (detected: service proxy runs nginx:1.27; nginx's {tmp_path}/nginx.conf proxies without a "
        "resolver (names resolved once, at start)): it resolved the app's addresses once"), problems
    assert "(RELEASE_ZERO_DOWNTIME=required)" in problems[0]


@pytest.mark.parametrize("setting", ["preferred", "required"])
@pytest.mark.parametrize("timeout", [None, "5", "1"])
def test_a_frontend_that_resolves_the_backend_once_and_waits_on_a_gone_address_is_refused_when_zero_downtime_is_required(
        write_env, tmp_path, setting, timeout):
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  backend:\n    image: ${BACKEND_IMAGE}\n  frontend:\n    image: ${FRONTEND_IMAGE}\n")
    env = parse_env_file(write_env(RELEASE_COMPOSE_FILE=str(compose), RELEASE_COMPOSE_PROJECT="books",
                                   RELEASE_ZERO_DOWNTIME=setting, RELEASE_FRONTEND_PINS_BACKEND="true",
                                   **({"RELEASE_FRONTEND_CONNECT_TIMEOUT_S": timeout} if timeout else {})))
    said = {None: "unset, nginx's 60 s assumed", "5": "5 s"}
    risk = pinned_frontend_risk(env)
    if timeout == "1":  # it gives up on a gone address within a second: a wait of about 2 s, measured, no error
        assert risk is None and compose_problems(env) == []
        return
    assert risk == (
        "the frontend resolves the backend once, at its start, so the one started beside the old backend keeps its "
        "address after it has gone, and a request sent there waits until the frontend gives up on it "
        f"(RELEASE_FRONTEND_CONNECT_TIMEOUT_S: {said[timeout]}) before it reaches the new backend: some users may get "
        "errors for a few seconds after the old backend stops")
    if setting == "preferred":  # released, the plan naming the risk (test_approval_units)
        assert compose_problems(env) == []
        return
    assert compose_problems(env) == [
        f"RELEASE_FRONTEND_PINS_BACKEND=true: {risk} (RELEASE_ZERO_DOWNTIME=required): have the frontend give up on an "
        "address that does not answer within a second (nginx: `proxy_connect_timeout 1s;`, which tries the next "
        "address) and set RELEASE_FRONTEND_CONNECT_TIMEOUT_S=1 (docs/zero-downtime.md)"]


def resolved(env) -> dict:
    """The compose file as every compose command of a release reads it: the team's,
    then the tool's override (the real `docker compose config`)."""
    return json.loads(run(project_compose(env, {"backend": "registry.test/b@sha256:" + "b" * 64,
                                                "frontend": "registry.test/f@sha256:" + "f" * 64}).config()).stdout)


def test_a_compose_file_that_builds_from_source_with_fixed_names_runs_the_pinned_images_side_by_side(write_env, tmp_path):
    """The runbook's `docker compose up --build` file: `build:` without `image:`, a
    `container_name`, `pull_policy: build`. The override, never the file, makes each
    app service run the pinned image with no name of its own; the file is unchanged."""
    compose = tmp_path / "compose.yml"
    text = ("services:\n  backend:\n    build: {context: ., dockerfile: Dockerfile.backend}\n"
            "    container_name: smartaccounting-api\n    pull_policy: build\n"
            "  frontend:\n    image: smartaccounting/frontend:latest\n    build: ./client\n"
            "    container_name: smartaccounting-web\n  db:\n    image: postgres:17\n    container_name: pg\n")
    compose.write_text(text)
    env = parse_env_file(write_env(RELEASE_COMPOSE_FILE=str(compose), RELEASE_COMPOSE_PROJECT="books",
                                   RELEASE_APP_DIR=str(tmp_path)))
    assert compose_problems(env) == []
    services = resolved(env)["services"]
    assert services["backend"] == {**services["backend"], "image": "registry.test/b@sha256:" + "b" * 64}
    assert services["frontend"]["image"] == "registry.test/f@sha256:" + "f" * 64
    for name in ("backend", "frontend"):
        assert not {"build", "container_name", "pull_policy"} & set(services[name]), services[name]
    assert services["db"]["container_name"] == "pg"  # not an app service: left as the team wrote it
    assert compose.read_text() == text


def test_the_override_is_a_private_file_written_whole_and_never_through_a_planted_link(write_env, tmp_path):
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  backend:\n    build: .\n  frontend:\n    build: ./client\n")
    project = project_compose(parse_env_file(write_env(RELEASE_COMPOSE_FILE=str(compose),
                                                       RELEASE_COMPOSE_PROJECT="books")))
    path = project.override_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    path.unlink(missing_ok=True)
    path.symlink_to(victim)  # planted where the override goes
    run(project.config())
    assert victim.read_text() == "keep me\n"
    assert not path.is_symlink() and path.read_text() == project.override
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_compose_older_than_the_override_needs_is_named_with_the_way_on():
    assert compose_version_problems("2.26.1-4\n") == [] and compose_version_problems("v2.24.0") == []
    assert compose_version_problems("2.20.2") == [
        "Docker Compose 2.20.2 is too old: this tool's override file needs 2.24 or later (its `!reset` tag); "
        "upgrade docker-compose-plugin"]


def test_an_engine_that_answers_at_once_was_not_away_and_one_that_never_does_is_named_after_the_wait(monkeypatch):
    from smartrelease.adapters.images import engine_answers_within

    assert engine_answers_within(1) == 0.0  # this machine's dockerd
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert engine_answers_within(0.6, poll_s=0.2) is None


def test_a_real_teams_compose_file_is_refused_line_by_line_for_what_a_release_could_not_control(write_env, tmp_path):
    """The runbook's own shapes, read by the real `docker compose config`: the guard
    and the metrics credentials supplied by the file (a literal, an env_file), the
    host's migrations mounted over the image's. Each is one named line, before
    anything changes. (A backend built from source and a frontend on an image of its
    own are the override's to pin, not problems.)"""
    (tmp_path / ".env.prod").write_text("METRICS_BASIC_AUTH_PASS=from-the-teams-own-file\n")
    compose = tmp_path / "docker-compose.prod.yml"
    compose.write_text(
        "services:\n"
        "  backend:\n"
        "    build: .\n"
        "    env_file: [.env.prod]\n"
        "    environment:\n"
        "      ALLOW_PROD_MIGRATIONS: 'true'\n"
        "      METRICS_BASIC_AUTH_USER: ${METRICS_BASIC_AUTH_USER}\n"
        "    volumes: ['./database:/usr/src/app/database']\n"
        "  frontend:\n"
        "    image: nginx:1.25\n")
    env = parse_env_file(write_env(RELEASE_COMPOSE_FILE=str(compose), RELEASE_COMPOSE_PROJECT="books",
                                   RELEASE_MIGRATIONS_DIR="/usr/src/app/database/migrations",
                                   RELEASE_APP_DIR=str(tmp_path)))
    problems = [p.removeprefix(f"{compose}: ") for p in compose_problems(env)]
    assert problems == [
        "backend gets ALLOW_PROD_MIGRATIONS from the compose file itself (a literal or an env_file), not from this "
        "tool, so `smartrelease guard` and the release's settings cannot change it: pass it as "
        "`ALLOW_PROD_MIGRATIONS: ${ALLOW_PROD_MIGRATIONS}` in its environment",
        "backend gets METRICS_BASIC_AUTH_PASS from the compose file itself (a literal or an env_file), not from this "
        "tool, so `smartrelease guard` and the release's settings cannot change it: pass it as "
        "`METRICS_BASIC_AUTH_PASS: ${METRICS_BASIC_AUTH_PASS}` in its environment",
        f"backend mounts {tmp_path / 'database'} over /usr/src/app/database, where its image holds the migrations "
        "(RELEASE_MIGRATIONS_DIR /usr/src/app/database/migrations): the migrations that run would be the host's, "
        "not the image's the guard, the plan and the undo read; remove the mount"]
    with pytest.raises(StepFailed) as refused:
        check_app_env(env)
    assert "from-the-teams-own-file" not in str(refused.value)  # named, never shown
    assert all(p in str(refused.value) for p in problems)

    # The same file with the variables passed through and no mount: nothing to refuse.
    compose.write_text(
        "services:\n"
        "  backend:\n"
        "    build: .\n"
        "    env_file: [.env.prod]\n"
        "    environment:\n"
        "      ALLOW_PROD_MIGRATIONS: ${ALLOW_PROD_MIGRATIONS}\n"
        "      METRICS_BASIC_AUTH_PASS: ${METRICS_BASIC_AUTH_PASS}\n"
        "    volumes: ['./uploads:/usr/src/app/uploads']\n"
        "  frontend:\n"
        "    image: nginx:1.25\n")
    assert compose_problems(env) == []
    assert resolved(env)["services"]["frontend"]["image"] == "registry.test/f@sha256:" + "f" * 64


TARGET = ReleaseTarget(drain_s=7, edge_settle_s=2, drain_file="/tmp/drain")


def both_services() -> list:
    return plan_cutover({"backend": [container("b1")], "frontend": [container("f1", WEB)]},
                        {"backend": NEW, "frontend": WEB.replace("c" * 64, "d" * 64)})


def test_behind_a_discovery_edge_the_new_ones_start_then_the_old_ones_are_drained_and_stopped_frontend_first():
    plan = both_services()
    assert cut_steps(plan, "discovery", TARGET, backend_first=None) == [
        Start(tuple(plan), 7, probed=False), Settle(2), Drain(("f1", "b1"), "/tmp/drain"), Settle(2),
        Stop(("f1",), 7), Stop(("b1",), 7)]


def test_behind_an_edge_that_resolves_names_nothing_is_drained_the_edge_asks_again_and_each_new_one_is_probed():
    plan = both_services()
    assert cut_steps(plan, "dns", TARGET, backend_first=None) == [Start(tuple(plan), 7, probed=True), Settle(2),
                                                                  Stop(("f1",), 7), Stop(("b1",), 7)]


def test_a_frontend_that_pins_the_backend_starts_in_a_wave_after_it():
    plan = both_services()
    backend, frontend = (next(p for p in plan if p.service == s) for s in ("backend", "frontend"))
    steps = cut_steps(plan, "dns", TARGET, backend_first="backend")
    assert steps[:2] == [Start((backend,), 7, probed=True), Start((frontend,), 7, probed=True)]
    assert steps[2:] == [Settle(2), Stop(("f1",), 7), Stop(("b1",), 7)]


def test_a_service_stopped_first_is_stopped_within_its_start_and_not_again_after():
    plan = plan_cutover({"backend": [container("b1")], "frontend": [container("f1", WEB)]},
                        {"backend": NEW, "frontend": WEB.replace("c" * 64, "d" * 64)}, {"frontend": "a host port"})
    steps = cut_steps(plan, "discovery", TARGET, backend_first=None)
    assert steps[0] == Start(tuple(plan), 7, probed=False)
    assert [s for s in steps if isinstance(s, (Drain, Stop))] == [Drain(("b1",), "/tmp/drain"), Stop(("b1",), 7)]


def test_the_database_service_is_left_to_compose_unless_all_its_containers_run_healthy_or_without_a_check():
    from smartrelease.tasks.launch import serving_already

    assert serving_already([container("d1", health="healthy")])
    assert serving_already([container("d1", health=None)])
    assert not serving_already([])  # not created yet: `up --wait` creates and waits for it
    assert not serving_already([container("d1", health="starting")])
    assert not serving_already([container("d1", health="unhealthy")])
    assert not serving_already([container("d1", health="healthy"), container("d0", status="exited", health=None)])
