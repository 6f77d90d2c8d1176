"""The stacks teams really run around the app, as changes to the sandbox's compose
file and env file: which edge, which health checks, which frontend. The e2e tests
and benchmarks/cutover.py put a sandbox on one the same way.

- edge `discovery`: the sandbox's own (routes only to containers Docker reports
  healthy, as Traefik's Docker provider); `dns`: it resolves the service names
  through Docker's DNS every second, reuses kept-alive connections and has no
  health check, with Go's two safety nets (Traefik's file provider); `dns-no-retry`:
  the same, sending each request once.
- health `drain`: the sandbox's checks, which fail once RELEASE_DRAIN_FILE exists;
  `plain`: the backend's is `curl -f …/health` every `interval`, the frontend has
  none; `none`: neither has one.
- edge `static`: HAProxy resolving the names once, at its start, from a config file
  mounted from beside the compose file (as nginx without a resolver).
- `pinned`: the frontend's nginx proxies /api to `backend:8080`, resolved once at
  its start, and the edge sends every request to the frontend; `connect_timeout`:
  its `proxy_connect_timeout` (nginx's default, 60s, when empty).
- `shutdown_delay_s`: the backend, told to stop, refuses new connections at once and
  exits that long after (as a team adds for an edge that caches DNS answers).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from smartrelease.record.lock import import_environment
from smartrelease.process import run
from smartrelease.tasks.launch import project_compose
from smartrelease.tasks.readiness import wait_ready
from smartrelease.tasks.rollback_plan import running_deployment

EDGE_RETRY = {"dns": "go", "dns-no-retry": "none"}
# HAProxy resolving each name once, at its start (libc, one address): an edge with
# static addresses, as nginx's `proxy_pass http://backend:5000;` without a resolver.
STATIC_CONFIG = """global
  log stdout format raw daemon notice
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
frontend https
  bind :8443 ssl crt /tmp/edge.pem
  http-request return status 404 if { path /metrics }
  use_backend api if { path_beg /api/ }
  default_backend web
backend api
  server api backend:8080
backend web
  server web frontend:8081
"""
STATIC_FILE = "edge-static.cfg"


@dataclass(frozen=True)
class Stack:
    edge: Literal["discovery", "dns", "dns-no-retry", "static"] = "discovery"
    health: Literal["drain", "plain", "none"] = "drain"
    interval: str = "30s"  # of the plain health check
    pinned: bool = False
    connect_timeout: str = ""  # the pinned frontend's proxy_connect_timeout ("1s"); nginx's 60s when empty
    shutdown_delay_s: int = 0  # the backend exits this long after SIGTERM, its listener closed at once

    @property
    def name(self) -> str:
        health = f"plain {self.interval}" if self.health == "plain" else self.health
        return (f"{self.edge} edge, {health} health check"
                + (", frontend resolving the backend once" if self.pinned else "")
                + (f" (connect timeout {self.connect_timeout})" if self.connect_timeout else "")
                + (f", backend exiting {self.shutdown_delay_s} s after SIGTERM" if self.shutdown_delay_s else ""))

    def compose(self, compose: dict) -> dict:
        """The sandbox's compose file (as yaml.safe_load gives it) changed to this stack."""
        services = compose["services"]
        backend, frontend, edge = services["backend"], services["frontend"], services["edge"]
        if self.health != "drain":
            backend["healthcheck"] = ({"disable": True} if self.health == "none" else
                                      {"test": ["CMD-SHELL", "curl -fsS http://127.0.0.1:8080/health"],
                                       "interval": self.interval, "timeout": "5s", "retries": 3})
            frontend["healthcheck"] = {"disable": True}
        environment = edge.setdefault("environment", {})
        if self.edge == "static":
            edge["entrypoint"] = ["sh", "-c", "cat /tls/edge.pem /tls/edge.key > /tmp/edge.pem && "
                                              "exec haproxy -db -f /etc/edge/haproxy.cfg"]
            edge["volumes"] = [v for v in edge["volumes"] if "docker.sock" not in v] + [
                f"./{STATIC_FILE}:/etc/edge/haproxy.cfg:ro"]
        elif self.edge != "discovery":
            environment.update(EDGE_MODE="dns", EDGE_RETRY=EDGE_RETRY[self.edge], BACKEND_ROUTES="/api/")
            edge["volumes"] = [v for v in edge["volumes"] if "docker.sock" not in v]  # it reads no health status
        if self.shutdown_delay_s:
            backend.setdefault("environment", {})["SHUTDOWN_DELAY_S"] = str(self.shutdown_delay_s)
        if self.pinned:
            frontend.setdefault("environment", {})["API_UPSTREAM"] = "backend:8080"
            if self.connect_timeout:
                frontend["environment"]["API_CONNECT_TIMEOUT"] = self.connect_timeout
            environment.update(BACKEND_HOST="frontend", BACKEND_PORT="8081")
        return compose

    def settings(self) -> dict[str, str | None]:
        """The env file's keys for this stack (None: the key is removed)."""
        # A static edge is left for the release to find in the compose file.
        dns = self.edge.startswith("dns")
        # The app's ports are the sandbox's env file's own, whatever the edge (envfiles.py).
        return {"RELEASE_EDGE": "dns" if dns else None,
                "RELEASE_FRONTEND_PINS_BACKEND": "true" if self.pinned else None,
                "RELEASE_FRONTEND_CONNECT_TIMEOUT_S": self.connect_timeout.removesuffix("s") or None}


# The matrix benchmarks/cutover.py measures, by name.
MATRIX = {
    "discovery-drain": Stack(),
    "discovery-plain": Stack(health="plain"),
    "dns-plain": Stack(edge="dns", health="plain"),
    "dns-plain-1s": Stack(edge="dns", health="plain", interval="1s"),
    "dns-none": Stack(edge="dns", health="none"),
    "dns-plain-delay": Stack(edge="dns", health="plain", shutdown_delay_s=2),
    "dns-no-retry": Stack(edge="dns-no-retry", health="plain"),
    "dns-pinned": Stack(edge="dns", health="plain", pinned=True),
    "static": Stack(edge="static", health="plain"),
}


def set_keys(env_file: Path, changes: dict[str, str | None]) -> None:
    """Change keys of an env file in place (None removes one)."""
    lines = [line for line in env_file.read_text().splitlines() if line.partition("=")[0] not in changes]
    env_file.write_text("\n".join(lines + [f"{k}={v}" for k, v in changes.items() if v is not None]) + "\n")


def put(stack: Stack, compose_file: Path, original: str, env_file: Path, environment: str) -> None:
    """Put the sandbox whose compose file is `compose_file` (`original`: its text as
    the sandbox wrote it) on `stack`, and recreate its app and edge containers on the
    running version, as the team would run them; returns once it is ready."""
    compose_file.write_text(yaml.safe_dump(stack.compose(yaml.safe_load(original)), sort_keys=False))
    if stack.edge == "static":
        (compose_file.parent / STATIC_FILE).write_text(STATIC_CONFIG)
    set_keys(env_file, stack.settings())
    env = import_environment(env_file, environment)
    run(project_compose(env, running_deployment(env).images).up(["backend", "frontend", "edge"], no_deps=True,
                                                                 force_recreate=True))
    wait_ready(env)
