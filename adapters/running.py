"""What the Compose project is running right now, read from Docker Engine: each
service's container, the image it runs, that image's registry digest and labels."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import docker

from smartrelease.blocks.app_contract import ROLES
from smartrelease.blocks.envfile import Environment
from smartrelease.refs import same_repository


@dataclass(frozen=True)
class HealthCheck:
    """One run of a container's Docker health check: when it started (seconds since
    the epoch) and its exit code (0 passed, 1 failed, -1 timed out or could not run)."""

    started: float
    exit_code: int


_DOCKER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def docker_time(text: str) -> float | None:
    """Seconds since the epoch of Docker's RFC 3339 time with nanoseconds
    ("2026-12-06T17:29:07.123456789Z"), which Python's own parser reads only to
    microseconds; None for anything else."""
    if not (m := _DOCKER_TIME.match(text or "")):
        return None
    whole, fraction, zone = m.groups()
    parsed = datetime.fromisoformat(f"{whole}{'+00:00' if zone == 'Z' else zone}")
    return parsed.timestamp() + float(f"0.{fraction or 0}")


def health_checks(state: dict) -> tuple[HealthCheck, ...]:
    """The health check's last runs Docker keeps (five), oldest first."""
    return tuple(HealthCheck(started, int(entry.get("ExitCode", -1)))
                 for entry in (state.get("Health") or {}).get("Log") or []
                 if (started := docker_time(entry.get("Start") or "")) is not None)


@dataclass(frozen=True)
class Container:
    """One container of a service, as Docker Engine reports it (the one type for it:
    the cutover's, wait-ready's, the plan's and adoption's)."""

    id: str
    name: str
    reference: str  # the image it was created from (compose: repository@digest)
    status: str  # created, running, restarting, exited, ...
    health: str | None  # starting, healthy, unhealthy; None without a health check
    restarts: int
    address: str | None = None  # where this host reaches it (address_of), None when not running
    exposed: tuple[int, ...] = ()  # the TCP ports its image or service exposes
    checks: tuple[HealthCheck, ...] = ()  # its health check's last runs, oldest first
    service: str = ""  # its Compose service
    image_id: str = ""
    # Of its image, when it was read (running_services): every registry digest Docker
    # knows for it, and its labels (org.opencontainers.image.version, …).
    digests: tuple[str, ...] = ()
    image_labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, c, image=None) -> "Container":
        """docker-py's container `c`; `image`, docker-py's image it runs, for its digests and labels."""
        state, config = c.attrs["State"], c.attrs.get("Config") or {}
        return cls(id=c.id, name=c.name, service=(config.get("Labels") or {}).get(SERVICE_LABEL, c.name),
                   reference=config.get("Image") or "", status=state["Status"],
                   health=(state.get("Health") or {}).get("Status"), restarts=c.attrs.get("RestartCount", 0),
                   checks=health_checks(state),
                   address=address_of(c.attrs),
                   exposed=tuple(sorted(int(p.split("/")[0]) for p in config.get("ExposedPorts") or {}
                                        if p.endswith("/tcp"))),
                   image_id=c.attrs.get("Image") or "",
                   digests=tuple(image.attrs.get("RepoDigests") or []) if image is not None else (),
                   image_labels=dict(image.labels or {}) if image is not None else {})

    def digest_in(self, repository: str) -> str | None:
        """The digest this container was started from: its own reference's when it was
        pinned by digest (an image pulled both as an index and as its manifest has
        two RepoDigests), else the image's RepoDigest in `repository`."""
        repo, at, digest = self.reference.partition("@")
        if at and same_repository(repo, repository):
            return digest
        return next((d.split("@", 1)[1] for d in self.digests if same_repository(d.split("@", 1)[0], repository)), None)


def http_url(address: str, port: int, path: str) -> str:
    """A container's own endpoint: `path` on `address` (IPv6 in brackets) and `port`."""
    return f"http://{f'[{address}]' if ':' in address else address}:{port}{path}"


def address_of(attrs: dict) -> str | None:
    """The address at which this host reaches a running container: its IP on its
    Compose project's default network (on Linux the host routes to its bridge
    networks), else on any other it is attached to, or 127.0.0.1 on the host's network."""
    if (attrs.get("State") or {}).get("Status") != "running":
        return None
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    if "host" in networks:
        return "127.0.0.1"
    project = ((attrs.get("Config") or {}).get("Labels") or {}).get(PROJECT_LABEL)
    for name in sorted(networks, key=lambda n: (n != f"{project}_default", n)):
        if address := networks[name].get("IPAddress"):
            return address
    return None


PROJECT_LABEL, SERVICE_LABEL = "com.docker.compose.project", "com.docker.compose.service"


def containers(client: docker.DockerClient, *labels: str, running_only: bool = False, **filters: str) -> list:
    """Docker's containers carrying every label (`key=value`, or `key` for any value).
    A container removed between Docker's list and its inspect (another run, or the
    engine, tidying up) is left out: docker-py raises NotFound for it by default, and a
    sandbox coming up beside another one's `down` failed so."""
    wanted = {"label": list(labels), **filters} | ({"status": "running"} if running_only else {})
    return client.containers.list(all=not running_only, filters=wanted, ignore_removed=True)


def compose_labels(project: str, service: str | None = None) -> list[str]:
    """The labels Compose gives the containers of `project` (and of its `service`)."""
    return [f"{PROJECT_LABEL}={project}"] + ([f"{SERVICE_LABEL}={service}"] if service else [])


def service_containers(client: docker.DockerClient, project: str, service: str) -> list[Container]:
    return [Container.of(c) for c in containers(client, *compose_labels(project, service))]


def app_services(env: Environment, services: dict[str, Container]) -> dict[str, Container]:
    """The services a release ships, by role (backend, frontend), whatever the
    contract names them in the compose file."""
    return {role: services[env.target.service(role)] for role in ROLES if env.target.service(role) in services}


def project_containers(client: docker.DockerClient, project: str) -> list:
    return containers(client, *compose_labels(project))


def service_address(client: docker.DockerClient, project: str, service: str) -> str | None:
    """The address at which this host reaches the running container of `service`: its
    IP on the project's network (on Linux the host routes to its bridge networks), or
    127.0.0.1 for a container on the host's network. None when it is not running."""
    found = containers(client, *compose_labels(project, service), running_only=True)
    return address_of(found[0].attrs) if found else None


def running_services(client: docker.DockerClient, env: Environment) -> dict[str, Container]:
    """The project's containers by service, with their images' digests and labels."""
    services = {}
    for c in project_containers(client, env.target.compose_project or ""):
        try:
            image = client.images.get(c.attrs["Image"])
        except docker.errors.ImageNotFound:
            image = None
        found = Container.of(c, image)
        services[found.service] = found
    return services


def service_url(client: docker.DockerClient, project: str, url: str) -> str:
    """`url` as this host reaches it: an http URL whose host is a service of the
    Compose project (`http://backend:8080/metrics`, an internal endpoint the edge does
    not route) gets that container's address; any other URL is returned as it is."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return url
    if not containers(client, *compose_labels(project, parts.hostname)):
        return url  # not a service of the project: a name DNS knows
    address = service_address(client, project, parts.hostname)
    if address is None:
        raise LookupError(f"the {parts.hostname} service is not running in Compose project {project}")
    netloc = address + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def logs_tail(client: docker.DockerClient, container_id: str, lines: int = 15) -> str:
    try:
        return client.containers.get(container_id).logs(tail=lines).decode(errors="replace").rstrip()
    except docker.errors.NotFound:
        return "(container gone)"
