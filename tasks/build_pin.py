"""Runbook, deploy step 1, "Build/pin artifacts".

Each image (backend, frontend) ends pinned to a registry digest:
- a digest named by the caller is used as is (it must exist, and must agree with
  the version's tag if that tag exists);
- a version already in the registry is deployed as pushed, never rebuilt
  (a rebuild changes the digest, if only through the build time);
- only a version not yet pushed is built, from a clean checkout whose VERSION is
  that version, labelled and pushed.
Tags are immutable: a tag already pointing to other content is never overwritten.
"""

import time
from datetime import datetime, timezone
from pathlib import Path

import docker
from pydantic import BaseModel

from smartrelease.blocks.app_contract import ROLES
from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.process import Command, run
from smartrelease.report import Finding
from smartrelease.tasks.build_recipe import BuildRecipe, recipes
from smartrelease.adapters.images import build_image, engine, ensure_local, push_image, repo_digests
from smartrelease.adapters.registry import Registry, RegistryError
from smartrelease.tasks.runbook_task import runbook_task

STEP = "build-pin"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"


class PinnedImage(BaseModel):
    service: str
    repository: str  # registry host and path, e.g. 127.0.0.1:5001/smartaccounting/backend
    tag: str
    digest: str
    built: bool
    labels: dict[str, str] = {}

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


class Pinned(Finding):
    version: str
    images: dict[str, PinnedImage]

    @property
    def git_sha(self) -> str | None:
        return self.images["backend"].labels.get(LABEL_REVISION)

    @property
    def digests(self) -> dict[str, str]:
        return {i.repository: i.digest for i in self.images.values()}


def repository_path(env: Environment, service: str) -> str:
    path = {"backend": env.target.backend_image, "frontend": env.target.frontend_image}[service]
    if not path:
        raise StepFailed(STEP, f"RELEASE_{service.upper()}_IMAGE is not set")
    return path


def registry_for(env: Environment) -> Registry:
    if not env.target.registry:
        raise StepFailed(STEP, "RELEASE_REGISTRY is not set")
    creds = env.registry_credentials
    return Registry(env.target.registry, username=creds.username if creds else None,
                    password=creds.password.get_secret_value() if creds else None,
                    ca_bundle=env.target.registry_ca_bundle)


def login(client: docker.DockerClient, env: Environment) -> None:
    """Docker Engine logged in to the registry, for a push (when it takes credentials)."""
    if creds := env.registry_credentials:
        client.login(username=creds.username, password=creds.password.get_secret_value(),
                     registry=env.target.registry, reauth=True)


def check_labels(path: str, digest: str, labels: dict[str, str], version: str) -> None:
    """An image built elsewhere (CI's plain `docker build`) must carry the OCI labels
    the verify step checks the running app against, and name the version released."""
    missing = [label for label in (LABEL_VERSION, LABEL_REVISION, LABEL_CREATED) if not labels.get(label)]
    if missing:
        raise StepFailed(STEP, f"{path}@{digest[:19]}… lacks the OCI label(s) {', '.join(missing)}, which verify "
                               "checks the running app against; build it with `--label "
                               f"{LABEL_VERSION}=$(cat VERSION) --label {LABEL_REVISION}=$(git rev-parse HEAD) "
                               f"--label {LABEL_CREATED}=$(date -u +%Y-%m-%dT%H:%M:%SZ)` (as `smartrelease build` does)")
    if labels[LABEL_VERSION] != version:
        raise StepFailed(STEP, f"{path}@{digest[:19]}… is labelled version {labels[LABEL_VERSION]}, not {version}: "
                               "it is another version's image")


def checkout_revision(app_dir: Path, version: str) -> str:
    """The checkout's git SHA, refusing a checkout that does not match what it would be labelled."""
    git = ["git", "-C", str(app_dir)]
    found = (app_dir / "VERSION").read_text().strip() if (app_dir / "VERSION").is_file() else None
    if found != version:
        raise StepFailed(STEP, f"version {version} is not in the registry and the checkout {app_dir} is at {found}: cannot build it")
    head = run(Command((*git, "rev-parse", "HEAD"), timeout_s=30), check=False)
    if head.returncode != 0:
        raise StepFailed(STEP, f"{app_dir} is not a git checkout: the image's revision label would be unknown")
    dirty = run(Command((*git, "status", "--porcelain"), timeout_s=30)).stdout
    if dirty.strip():
        raise StepFailed(STEP, f"the checkout {app_dir} has uncommitted changes: the image would not match its git SHA")
    return head.stdout.strip()


PUSH_RETRY_DELAYS_S = (1, 3)  # a registry restarting, or a dropped connection, gets two more tries


def push_with_retries(client: docker.DockerClient, repository: str, tag: str,
                      delays_s: tuple[float, ...] = PUSH_RETRY_DELAYS_S, step: str = STEP) -> None:
    """Push, trying again after each of `delays_s`; a named failure after the last
    (layers already pushed are kept by the registry, so a retry sends only the rest)."""
    for attempt, delay in enumerate((*delays_s, None), 1):
        try:
            push_image(client, repository, tag)
            return
        except (RuntimeError, docker.errors.APIError) as exc:
            if delay is None:
                raise StepFailed(step, f"{exc} (tried {attempt} times over {sum(delays_s):g} s; nothing was "
                                       "launched)") from None
            time.sleep(delay)


def tag_taken(client: docker.DockerClient, registry: Registry, repository: str, path: str, tag: str) -> str | None:
    """Why `repository:tag` cannot be pushed: the registry's tag points to other content."""
    remote = registry.digest(path, tag)
    if remote and remote not in repo_digests(client, f"{repository}:{tag}", repository):
        return f"{path}:{tag} already points to {remote}; tags are immutable, refusing to overwrite it with different content"
    return None


def push_immutable(client: docker.DockerClient, registry: Registry, repository: str, path: str, tag: str,
                   step: str = STEP) -> str:
    """Push `repository:tag` unless the tag exists with other content; returns the digest."""
    if taken := tag_taken(client, registry, repository, path, tag):
        raise StepFailed(step, taken)
    remote = registry.digest(path, tag)
    if not remote:
        # The registry API has no "create only" push, so a push racing this one
        # could still land first; the digest check below catches that case.
        push_with_retries(client, repository, tag, step=step)
        remote = registry.digest(path, tag)
    if remote not in repo_digests(client, f"{repository}:{tag}", repository):
        raise StepFailed(step, f"after the push {path}:{tag} points to {remote}, not to the image pushed")
    return remote


def _build(client: docker.DockerClient, recipe: BuildRecipe, service: str, repository: str, version: str, sha: str,
           tag: str) -> dict[str, str]:
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {LABEL_VERSION: version, LABEL_REVISION: sha, LABEL_CREATED: created}
    try:  # this tool's labels and version arguments win over the compose file's
        build_image(client, Path(recipe.context), f"{repository}:{tag}", dockerfile=recipe.dockerfile,
                    target=recipe.target, labels={**recipe.labels, **labels},
                    build_args={**recipe.args, "APP_VERSION": version, "GIT_SHA": sha, "BUILD_TIME": created})
    except docker.errors.BuildError as exc:
        tail = " / ".join(str(line.get("stream") or line.get("error") or "").strip() for line in list(exc.build_log)[-5:])
        raise StepFailed(STEP, f"building {service} from {recipe.describe()} failed: {exc.msg}; last lines: {tail}") from None
    return labels


def build_pin(env: Environment, version: str, digests: dict[str, str] | None = None, tag: str | None = None) -> Pinned:
    """Pin both images of `version` to digests, building and pushing what the registry
    lacks. `tag` is the registry tag (default: the version; dev builds use dev-<sha>)."""
    digests = digests or {}
    tag = tag or version
    images: dict[str, PinnedImage] = {}
    try:
        with registry_for(env) as registry:
            to_build = []
            for service in ROLES:
                path = repository_path(env, service)
                repository = f"{env.target.registry}/{path}"
                tagged = registry.digest(path, tag)
                if named := digests.get(service):
                    if not registry.digest(path, named):
                        raise StepFailed(STEP, f"{path}@{named} is not in the registry")
                    if tagged and tagged != named:
                        raise StepFailed(STEP, f"{path}:{tag} points to {tagged}, not to the named {named}")
                    digest = named
                elif tagged:
                    digest = tagged
                else:
                    to_build.append((service, path, repository))
                    continue
                labels = registry.labels(path, digest)
                check_labels(path, digest, labels, version)
                images[service] = PinnedImage(service=service, repository=repository, tag=tag, digest=digest,
                                              built=False, labels=labels)
            client = engine()
            if to_build:
                sha = checkout_revision(Path(env.target.app_dir or "."), version)
                how = recipes(env)  # the compose file's build: sections
                login(client, env)
                for service, path, repository in to_build:
                    labels = _build(client, how[service], service, repository, version, sha, tag)
                    digest = push_immutable(client, registry, repository, path, tag)
                    images[service] = PinnedImage(service=service, repository=repository, tag=tag, digest=digest,
                                                  built=True, labels=labels)
            # Migration-guard and launch run these images on this host, which may never
            # have built them: pull them now, with the registry's credentials.
            pulled = {s for s, image in images.items() if ensure_local(client, image.ref, env.registry_credentials)}
    except RegistryError as exc:
        raise StepFailed(STEP, str(exc), transient=True) from None
    except docker.errors.APIError as exc:
        raise StepFailed(STEP, f"Docker Engine: {exc.explanation or exc}") from None

    ordered = {s: images[s] for s in ROLES}
    detail = "; ".join(
        f"{i.service} {i.digest[:19]}… ({'built and pushed' if i.built else 'already pushed, deployed as pushed'}"
        f"{', pulled' if i.service in pulled else ''})"
        for i in ordered.values()
    )
    return Pinned(detail=f"{tag}: {detail}", version=version, images=ordered)


build_pin_task = runbook_task(STEP, timeout_s=1800)(build_pin)
