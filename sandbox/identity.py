"""What makes one sandbox its own on a shared machine: a short id kept in its state
directory (`sandbox.json`), the Compose project names derived from it, the ports it
claimed, and the databases it created.

Two clones (or two test workers) on one machine never share a project, a volume, a
port or a Prefect server: a default port another process holds moves to a free one,
and a database volume this sandbox did not create is refused, never reused. What an
earlier sandbox left behind is named, with the command that removes it.
"""

import json
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

import docker

from smartrelease.errors import ConfigError
from smartrelease.adapters.running import PROJECT_LABEL, compose_labels, containers

FILE = "sandbox.json"
PROJECT_PREFIX = "smartaccounting-sandbox"
COMPOSE_ENV_LABEL = "com.docker.compose.project.environment_file"

# Each port a sandbox may publish: its default, the variable that sets it, and what
# uses it (for the line saying it moved).
PORTS = {
    "edge": (18443, "SANDBOX_EDGE_PORT", "the TLS edge"),
    "dev_edge": (18453, "SANDBOX_DEV_EDGE_PORT", "the dev environment's TLS edge"),
    "registry": (5001, "SANDBOX_REGISTRY_PORT", "the registry"),
    "pg": (55432, "SANDBOX_PG_PORT", "--external-db's PostgreSQL"),
    "server": (4200, "SMARTRELEASE_SERVER_PORT", "the Prefect server"),
    "server_pg": (55442, "SMARTRELEASE_SERVER_PG_PORT", "the Prefect server's PostgreSQL"),
}


class IdentityError(ConfigError):
    """The sandbox's record or a port setting is unusable; the message says how to go on."""


@dataclass
class Identity:
    id: str
    ports: dict[str, int] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)  # projects whose database volume this sandbox created
    leftovers: list[str] = field(default_factory=list)  # projects of an earlier sandbox here, for `destroy`

    @classmethod
    def load(cls, root: Path) -> "Identity | None":
        path = root / FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(str(data["id"]), {k: int(v) for k, v in data.get("ports", {}).items()},
                       list(data.get("databases", [])), list(data.get("leftovers", [])))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IdentityError(f"{path} is unreadable ({exc}): `smartrelease sandbox destroy` starts afresh") from None

    def save(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        partial = root / f".{FILE}.{os.getpid()}"
        partial.write_text(json.dumps(self.__dict__, indent=1) + "\n")
        partial.replace(root / FILE)  # os.replace: a link planted at the name is replaced, never followed


def new_id() -> str:
    return secrets.token_hex(3)


def project_name(sandbox_id: str) -> str:
    return f"{PROJECT_PREFIX}-{sandbox_id}"


def explicit_port(name: str) -> int | None:
    """The port set by its environment variable, if any."""
    _, variable, _ = PORTS[name]
    value = os.environ.get(variable)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise IdentityError(f"{variable} must be a port number, not {value!r}")
    return int(value)


def port_free(port: int) -> bool:
    """Whether nothing on this machine listens on `port` (any address)."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def holder(client: docker.DockerClient | None, port: int) -> str:
    """Who holds `port`, as far as Docker Engine knows: ' (container NAME)' or ''."""
    if client is None:
        return ""
    try:
        found = containers(client, running_only=True, publish=str(port))
    except docker.errors.DockerException:
        return ""
    return f" (by container {found[0].name})" if found else ""


def claim_port(name: str, client: docker.DockerClient | None) -> tuple[int, str | None]:
    """A port for `name`: its default when free, else any free one, with the line that says so."""
    default, variable, what = PORTS[name]
    if port_free(default):
        return default, None
    port = any_free_port()
    return port, (f"port {default} is taken{holder(client, default)}: {what} uses {port} instead "
                  f"(recorded in the sandbox's state; {variable} sets it)")


@dataclass(frozen=True)
class Leftover:
    """Containers, networks and volumes of a Compose project no running sandbox here owns."""

    project: str
    containers: tuple[str, ...]
    volumes: tuple[str, ...]
    why: str
    networks: tuple[str, ...] = ()

    def removal(self) -> str:
        """Containers first: a network or volume in use cannot be removed."""
        parts = []
        if self.containers:
            parts.append("docker rm -f " + " ".join(self.containers))
        if self.networks:
            parts.append("docker network rm " + " ".join(self.networks))
        if self.volumes:
            parts.append("docker volume rm " + " ".join(self.volumes))
        return " && ".join(parts)

    def line(self) -> str:
        what = ", ".join(filter(None, [f"containers {', '.join(self.containers)}" if self.containers else "",
                                       f"networks {', '.join(self.networks)}" if self.networks else "",
                                       f"volumes {', '.join(self.volumes)}" if self.volumes else ""]))
        return (f"left behind by another sandbox ({self.why}), not reused: Compose project {self.project} ({what}); "
                f"`{self.removal()}` removes it")


@dataclass(frozen=True)
class ProjectResources:
    """What Docker holds under one Compose project's label, in the order to remove it."""

    containers: list
    networks: list
    volumes: list

    def remove(self, volumes: bool = True) -> None:
        for container in self.containers:
            container.remove(force=True)
        for thing in (*self.networks, *(self.volumes if volumes else ())):
            thing.remove()


def project_resources(client: docker.DockerClient, project: str) -> ProjectResources:
    labels = compose_labels(project)
    return ProjectResources(containers(client, *labels), client.networks.list(filters={"label": labels}),
                            client.volumes.list(filters={"label": labels}))


def leftover_of(client: docker.DockerClient, project: str, why: str) -> Leftover | None:
    found = project_resources(client, project)
    if not (found.containers or found.volumes or found.networks):
        return None
    return Leftover(project, tuple(sorted(c.name for c in found.containers)),
                    tuple(sorted(v.name for v in found.volumes)), why, tuple(sorted(n.name for n in found.networks)))


def orphaned_projects(client: docker.DockerClient, exclude: set[str]) -> list[str]:
    """Sandbox projects on this machine whose state directory is gone: their
    containers name a compose env file that no longer exists."""
    found = set()
    for c in containers(client, COMPOSE_ENV_LABEL):
        project, env_file = c.labels.get(PROJECT_LABEL, ""), c.labels.get(COMPOSE_ENV_LABEL, "")
        if project.startswith(PROJECT_PREFIX) and project not in exclude and env_file and not Path(env_file).exists():
            found.add(project)
    return sorted(found)
