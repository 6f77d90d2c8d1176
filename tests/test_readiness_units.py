"""wait-ready's judgement of a container, without Docker: what fails at once, and how
long an unhealthy one is given."""

import pytest

from smartrelease.tasks.probe import Probe, probe_for
from smartrelease.tasks.readiness import _broken
from smartrelease.adapters.running import Container, HealthCheck, docker_time, health_checks


def service(health: str | None = "healthy", status: str = "running", restarts: int = 0) -> dict:
    return {"backend": Container(id="c1", name="backend-1", service="backend", reference="", status=status,
                                 health=health, restarts=restarts, image_id="sha256:1")}


def test_an_unhealthy_container_fails_only_once_it_has_stayed_unhealthy_for_the_grace():
    since: dict[str, float] = {}
    assert _broken(service("unhealthy"), {}, since, now=100.0, grace_s=10) is None
    assert _broken(service("unhealthy"), {}, since, now=109.9, grace_s=10) is None
    assert _broken(service("unhealthy"), {}, since, now=110.0, grace_s=10) == ("backend", "unhealthy for 10 s")


def test_turning_healthy_again_starts_the_grace_over():
    since: dict[str, float] = {}
    assert _broken(service("unhealthy"), {}, since, now=100.0, grace_s=10) is None
    assert _broken(service("healthy"), {}, since, now=105.0, grace_s=10) is None and since == {}
    assert _broken(service("unhealthy"), {}, since, now=112.0, grace_s=10) is None
    assert _broken(service("unhealthy"), {}, since, now=122.0, grace_s=10) == ("backend", "unhealthy for 10 s")


def test_no_grace_fails_an_unhealthy_container_at_once():
    assert _broken(service("unhealthy"), {}, {}, now=1.0, grace_s=0) == ("backend", "unhealthy for 0 s")


def test_a_container_that_exits_or_restarts_fails_at_once_whatever_the_grace():
    assert _broken(service(status="exited"), {}, {}, now=1.0, grace_s=60) == ("backend", "exited, restarted 0 time(s)")
    assert _broken(service(restarts=2), {"c1": 1}, {}, now=1.0, grace_s=60) == ("backend", "running, restarted 2 time(s)")
    assert _broken(service(restarts=2), {"c1": 2}, {}, now=1.0, grace_s=60) is None  # restarts before the first look


READY = Probe(8080, "/ready")


def checked(*runs: tuple[float, int], health: str = "unhealthy") -> dict:
    """The backend with its health check's runs: (started, exit code)."""
    return {"backend": Container(id="c1", name="backend-1", service="backend", reference="", status="running",
                                 health=health, restarts=0, checks=tuple(HealthCheck(t, code) for t, code in runs))}


def test_a_health_check_failing_after_the_container_answered_its_ready_path_fails_it_at_once():
    assert _broken(checked((50.0, 1), (52.0, 1)), {}, {}, now=1.0, grace_s=30, ready_at={"c1": (READY, 51.0)}) == (
        "backend", "unhealthy: its health check failed (exit 1) after it answered GET :8080/ready with 200 on its "
                   "own address, so it is not starting but broken, and RELEASE_UNHEALTHY_GRACE_S does not apply")


def test_an_unhealthy_container_that_has_not_answered_200_yet_is_given_the_grace():
    since: dict[str, float] = {}
    assert _broken(checked((50.0, 1), (52.0, 1)), {}, since, now=100.0, grace_s=10, ready_at={}) is None
    assert _broken(checked((50.0, 1), (52.0, 1)), {}, since, now=110.0, grace_s=10,
                   ready_at={}) == ("backend", "unhealthy for 10 s")


def test_checks_that_failed_before_the_answer_or_timed_out_after_it_do_not_fail_a_container_that_answers():
    # Unpaused, or its check timed out on a loaded machine: unhealthy for a moment while it answers 200.
    ready = {"c1": (READY, 51.0)}
    assert _broken(checked((50.0, 1), (52.0, -1)), {}, {}, now=1.0, grace_s=30, ready_at=ready) is None
    assert _broken(checked((50.0, 1), (52.0, 0), health="healthy"), {}, {}, now=1.0, grace_s=0, ready_at=ready) is None


def test_only_the_apps_containers_with_a_known_port_are_probed_on_their_ready_path(write_env):
    from smartrelease.blocks.envfile import parse_env_file

    target = parse_env_file(write_env(RELEASE_FRONTEND_READY_PATH="/index.html")).target
    of = {s: Container(id=s, name=s, service=s, reference="", status="running", health="unhealthy", restarts=0,
                       exposed=ports) for s, ports in (("backend", (5000,)), ("frontend", (80,)),
                                                       ("db", (5432,)), ("worker", ()))}
    assert probe_for(target, of["backend"]) == Probe(5000, "/ready")
    assert probe_for(target, of["frontend"]) == Probe(80, "/index.html")
    assert probe_for(target, of["db"]) is None  # not the app's: Docker's status alone judges it
    target = parse_env_file(write_env(RELEASE_BACKEND_SERVICE="worker")).target
    assert probe_for(target, of["worker"]) is None  # no port set, none exposed: nothing to ask


def test_when_the_grace_runs_out_on_an_app_container_that_could_not_be_asked_the_setting_is_named(write_env):
    from smartrelease.blocks.envfile import parse_env_file

    target = parse_env_file(write_env()).target
    since: dict[str, float] = {}
    assert _broken(service("unhealthy"), {}, since, now=0.0, grace_s=10, contract=target) is None
    assert _broken(service("unhealthy"), {}, since, now=10.0, grace_s=10, contract=target) == (
        "backend", "unhealthy for 10 s; its port is unknown (its image exposes none), so it was not asked its ready "
                   "path to tell a broken container from a slow starter: set RELEASE_BACKEND_PORT")
    db = {"db": Container(id="d1", name="db-1", service="db", reference="", status="running", health="unhealthy",
                          restarts=0)}
    assert _broken(db, {}, {"d1": 0.0}, now=10.0, grace_s=10, contract=target) == ("db", "unhealthy for 10 s")


def test_dockers_health_log_is_read_with_its_nanosecond_start_times():
    state = {"Health": {"Status": "unhealthy", "Log": [
        {"Start": "2026-12-06T17:29:07.123456789Z", "End": "2026-12-06T17:29:07.2Z", "ExitCode": 1, "Output": "500"},
        {"Start": "2026-12-06T18:29:09.5+01:00", "ExitCode": -1, "Output": "Health check exceeded timeout (5s)"},
        {"Start": "", "ExitCode": 0}]}}
    assert health_checks(state) == (HealthCheck(docker_time("2026-12-06T17:29:07.123456789Z"), 1),
                                    HealthCheck(docker_time("2026-12-06T17:29:09.5Z"), -1))
    assert docker_time("2026-12-06T17:29:09.5Z") - docker_time("2026-12-06T17:29:07.123456789Z") == pytest.approx(2.376543211)
    assert health_checks({}) == () and docker_time("yesterday") is None
