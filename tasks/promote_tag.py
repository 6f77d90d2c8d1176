"""Promotion's registry work, over the registry's HTTP API: what a dev tag points to,
and the same manifest bytes stored under the SemVer tag, so the new tag names exactly
the dev digest (no pull, no rebuild, no layer copied)."""

from smartrelease.errors import StepFailed
from tasks.registry import Registry

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
