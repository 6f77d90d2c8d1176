"""Promotion's registry work, over the registry's HTTP API: what a dev tag points to,
and the same manifest bytes stored under the SemVer tag, so the new tag names exactly
the dev digest (no pull, no rebuild, no layer copied)."""

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.refs import ImageRef
from smartrelease.report import Finding
from smartrelease.blocks.app_contract import ROLES
from smartrelease.tasks.build_pin import registry_for, repository_path
from smartrelease.adapters.registry import Registry, RegistryError
from smartrelease.tasks.runbook_task import runbook_task

RESOLVE_STEP = "resolve"
TAG_STEP = "tag"


def resolve_tag(registry: Registry, path: str, tag: str) -> str:
    digest = registry.digest(path, tag)
    if digest is None:
        raise StepFailed(RESOLVE_STEP, f"{path}:{tag} does not exist in {registry.registry}: build it first "
                                       "(`smartrelease build --env-file .env.dev`)")
    return digest


def tag_digest(registry: Registry, path: str, digest: str, tag: str) -> str:
    """Point `tag` at `digest`; idempotent, and never moves an existing tag."""
    existing = registry.digest(path, tag)
    if existing == digest:
        return f"{path}:{tag} already names {digest}"
    if existing is not None:
        raise StepFailed(TAG_STEP, f"{path}:{tag} already points to {existing}, not to {digest}; tags are immutable, "
                                   "refusing to move it (the registry is unchanged)")
    found = registry.manifest(path, digest)
    if found is None:
        raise StepFailed(TAG_STEP, f"{path}@{digest} is not in {registry.registry}")
    body, media_type = found
    registry.put_manifest(path, tag, body, media_type)
    # Read back through the API: the tag must name exactly the digest promoted.
    landed = registry.digest(path, tag)
    if landed != digest:
        raise StepFailed(TAG_STEP, f"after tagging, {path}:{tag} names {landed}, not {digest}")
    return f"{path}:{tag} now names {digest}"


class Resolved(Finding):
    images: dict[str, str]  # service -> registry/repository@digest


def resolve(env: Environment, from_tag: str) -> Resolved:
    try:
        with registry_for(env) as registry:
            images = {}
            for service in ROLES:
                path = repository_path(env, service)
                images[service] = f"{env.target.registry}/{path}@{resolve_tag(registry, path, from_tag)}"
    except RegistryError as exc:
        raise StepFailed(RESOLVE_STEP, str(exc), transient=True) from None
    return Resolved(detail=f"{from_tag}: " + ", ".join(f"{s} {ref.split('@')[1][:19]}…" for s, ref in images.items()),
                    images=images)


def tag(env: Environment, images: dict[str, str], version: str) -> Finding:
    """Both tags checked before either is written: a refusal leaves the registry unchanged."""
    try:
        with registry_for(env) as registry:
            for service, ref in images.items():
                path, digest = repository_path(env, service), ImageRef.parse(ref).digest
                existing = registry.digest(path, version)
                if existing not in (None, digest):
                    raise StepFailed(TAG_STEP, f"{path}:{version} already points to {existing}, not to {digest}; tags "
                                               "are immutable, refusing (the registry is unchanged)")
            done = [tag_digest(registry, repository_path(env, s), ImageRef.parse(ref).digest, version)
                    for s, ref in images.items()]
    except RegistryError as exc:
        raise StepFailed(TAG_STEP, str(exc), transient=True) from None
    return Finding(detail="; ".join(done))


resolve_task = runbook_task(RESOLVE_STEP, timeout_s=60, retries=2)(resolve)
tag_task = runbook_task(TAG_STEP, timeout_s=120, retries=1)(tag)
