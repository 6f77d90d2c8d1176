"""Building and pushing the app's images with the docker SDK."""

from pathlib import Path

import docker


def build_image(client: docker.DockerClient, context: Path, tag: str, *, dockerfile: str = "Dockerfile",
                build_args: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> str:
    """Build `context` as `tag`; returns the image id."""
    image, _logs = client.images.build(
        path=str(context), dockerfile=dockerfile, tag=tag, buildargs=build_args or {}, labels=labels or {}, rm=True, pull=False
    )
    return image.id


def push_image(client: docker.DockerClient, repository: str, tag: str) -> None:
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {repository}:{tag} failed: {line['error']}")
