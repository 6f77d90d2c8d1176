"""wait-ready's judgement of a container, without Docker: what fails at once, and how
long an unhealthy one is given."""

from smartrelease.tasks.readiness import _broken
from smartrelease.adapters.running import Container


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
