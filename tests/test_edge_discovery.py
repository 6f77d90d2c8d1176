"""The sandbox edge's discovery (sandbox/edge/discover.py) as plain values: which of
Docker's containers it routes to, and the HAProxy runtime commands it sends. The
edge itself, under a real cutover, is tested in test_cutover_e2e.py."""

from smartrelease.sandbox.edge.discover import Pool, addresses, routable


def docker_container(service: str, ip: str, status: str = "Up 5 seconds (healthy)", state: str = "running",
                     network: str = "books_default") -> dict:
    """A row of Docker's GET /containers/json, as much of it as discovery reads."""
    return {"State": state, "Status": status, "Labels": {"com.docker.compose.service": service},
            "NetworkSettings": {"Networks": {network: {"IPAddress": ip}}}}


def test_only_running_containers_docker_calls_healthy_or_that_have_no_health_check_are_routed():
    assert routable(docker_container("backend", "10.0.0.2"))
    assert routable(docker_container("backend", "10.0.0.2", status="Up 3 minutes"))  # no health check
    assert not routable(docker_container("backend", "10.0.0.2", status="Up 1 second (health: starting)"))
    assert not routable(docker_container("backend", "10.0.0.2", status="Up 9 seconds (unhealthy)"))  # drained
    assert not routable(docker_container("backend", "10.0.0.2", status="Exited (0) 1 second ago", state="exited"))


def test_addresses_are_the_services_own_on_the_edges_networks():
    containers = [docker_container("backend", "10.0.0.2"), docker_container("frontend", "10.0.0.3"),
                  docker_container("backend", "10.9.0.2", network="other"),
                  docker_container("backend", "10.0.0.4", status="Up 1 second (health: starting)")]
    assert addresses(containers, "backend", {"books_default"}) == {"10.0.0.2"}


def test_the_pool_takes_leavers_out_before_it_fills_a_slot_and_keeps_the_others_where_they_are():
    pool = Pool("backend", "app", 2, "8080")
    assert pool.commands({"10.0.0.2"}) == ["set server backend/app1 addr 10.0.0.2 port 8080",
                                           "set server backend/app1 state ready"]
    assert pool.commands({"10.0.0.2", "10.0.0.5"}) == ["set server backend/app2 addr 10.0.0.5 port 8080",
                                                       "set server backend/app2 state ready"]
    assert pool.commands({"10.0.0.2", "10.0.0.5"}) == []  # nothing changed: nothing sent
    # The old one drained and a third started in the same round: the slot is freed first.
    assert pool.commands({"10.0.0.5", "10.0.0.7"}) == ["set server backend/app1 state maint",
                                                       "set server backend/app1 addr 10.0.0.7 port 8080",
                                                       "set server backend/app1 state ready"]
    assert pool.slots == {"app1": "10.0.0.7", "app2": "10.0.0.5"}


def test_a_full_pool_routes_to_what_fits_and_a_failed_update_is_redone_from_scratch():
    pool = Pool("frontend", "web", 1, "8081")
    assert pool.commands({"10.0.0.2", "10.0.0.3"}) == ["set server frontend/web1 addr 10.0.0.2 port 8081",
                                                       "set server frontend/web1 state ready"]
    pool.forget()
    assert pool.commands({"10.0.0.2"}) == ["set server frontend/web1 state maint",
                                           "set server frontend/web1 addr 10.0.0.2 port 8081",
                                           "set server frontend/web1 state ready"]
