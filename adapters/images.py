"""The one place that talks to Docker Engine about images: build, push, inspect."""

import time
from pathlib import Path

import docker

from smartrelease.refs import repository_of, same_repository

# Builds and pushes stream for minutes without a byte on quiet steps; docker-py's
# default 60 s read timeout would cut them off.
ENGINE_TIMEOUT_S = 600


def engine(timeout_s: float = ENGINE_TIMEOUT_S) -> docker.DockerClient:
    return docker.from_env(timeout=timeout_s)


def engine_answers_within(timeout_s: float, poll_s: float = 0.5) -> float | None:
    """Seconds until Docker Engine answers a ping (0 when it does at once); None when
    it has not within `timeout_s` (restarting, or gone)."""
    started, attempts = time.monotonic(), 0
    while True:
        attempts += 1
        try:
            if docker.from_env(timeout=5).ping():
                return 0.0 if attempts == 1 else time.monotonic() - started
        except Exception:  # docker-py raises DockerException or requests' errors while it is away
            pass
        if time.monotonic() - started >= timeout_s:
            return None
        time.sleep(poll_s)


def references(listing: list[dict], *prefixes: str) -> list[str]:
    """The tags and digest references (an image pulled by digest has no tag) in Engine's
    image list whose repository starts with one of `prefixes`."""
    return [ref for image in listing for ref in [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]
            if not ref.startswith("<none>") and repository_of(ref).startswith(prefixes)]


def remove_images(client: docker.DockerClient, *prefixes: str) -> int:
    """Remove every tag and digest reference whose repository starts with one of
    `prefixes`; an image left with neither is deleted, one a container still uses is
    left. How many references went.

    Engine's own list already names each image's references: docker-py's
    `images.list()` inspects every image after listing them, and fails with 404 when
    another sandbox on the host deleted one of its own in between."""
    removed = 0
    for ref in references(client.api.images(), *prefixes):
        try:
            client.images.remove(ref)
            removed += 1
        except docker.errors.APIError:  # in use by a container (409), or gone meanwhile (404)
            pass
    return removed


def build_image(client: docker.DockerClient, context: Path, tag: str, *, dockerfile: str = "Dockerfile",
                target: str | None = None, build_args: dict[str, str] | None = None,
                labels: dict[str, str] | None = None) -> str:
    """Build `context` as `tag` (up to the stage `target`); returns the image id."""
    image, _logs = client.images.build(
        path=str(context), dockerfile=dockerfile, tag=tag, target=target, buildargs=build_args or {},
        labels=labels or {}, rm=True, pull=False
    )
    return image.id


def push_image(client: docker.DockerClient, repository: str, tag: str) -> None:
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {repository}:{tag} failed: {line['error']}")


def repo_digests(client: docker.DockerClient, ref: str, repository: str) -> set[str]:
    """The registry digests Docker knows for the local image `ref` in `repository`."""
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return set()
    return {d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or []
            if same_repository(d.split("@", 1)[0], repository)}


def ensure_local(client: docker.DockerClient, ref: str, credentials=None) -> bool:
    """Pull `ref` (repository@digest) unless Docker already has it; True when pulled.
    A release host need not be the one that built the image."""
    try:
        client.images.get(ref)
        return False
    except docker.errors.ImageNotFound:
        auth = ({"username": credentials.username, "password": credentials.password.get_secret_value()}
                if credentials else None)
        client.images.pull(ref, auth_config=auth)
        return True
