"""What the Compose project is running right now, read from Docker Engine: each
service's container, the image it runs, that image's registry digest and labels."""

import docker
from pydantic import BaseModel

from blocks.envfile import Environment
from smartrelease.refs import same_repository


class RunningService(BaseModel):
    service: str
    container_id: str
    status: str  # Docker's: created, running, restarting, exited, ...
    health: str | None  # starting, healthy, unhealthy; None without a health check
    restart_count: int
    image_id: str
    digests: list[str]  # every registry digest Docker knows for the image
    labels: dict[str, str]
    reference: str = ""  # what the container was created from (compose: repository@digest)

    def digest_in(self, repository: str) -> str | None:
        """The digest this container was started from: its own reference's when it was
        pinned by digest (an image pulled both as an index and as its manifest has
        two RepoDigests), else the image's RepoDigest in `repository`."""
        repo, at, digest = self.reference.partition("@")
        if at and same_repository(repo, repository):
            return digest
        return next((d.split("@", 1)[1] for d in self.digests if same_repository(d.split("@", 1)[0], repository)), None)


def project_containers(client: docker.DockerClient, project: str) -> list:
    return client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})


def running_services(client: docker.DockerClient, env: Environment) -> dict[str, RunningService]:
    services = {}
    for c in project_containers(client, env.target.compose_project or ""):
        state = c.attrs["State"]
        try:
            image = client.images.get(c.attrs["Image"])
            digests, labels = image.attrs.get("RepoDigests") or [], image.labels or {}
        except docker.errors.ImageNotFound:
            digests, labels = [], {}
        name = c.labels.get("com.docker.compose.service", c.name)
        services[name] = RunningService(
            service=name, container_id=c.id, status=state["Status"], health=(state.get("Health") or {}).get("Status"),
            restart_count=c.attrs.get("RestartCount", 0), image_id=c.attrs["Image"], digests=digests, labels=labels,
            reference=(c.attrs.get("Config") or {}).get("Image") or "",
        )
    return services


def logs_tail(client: docker.DockerClient, container_id: str, lines: int = 15) -> str:
    try:
        return client.containers.get(container_id).logs(tail=lines).decode(errors="replace").rstrip()
    except docker.errors.NotFound:
        return "(container gone)"
