"""Reading the image registry over its HTTP API (Docker Registry v2), with httpx.

Reading the manifest and the image config is how the release learns what a tag
points to and what an image was built from, without pulling a single layer.
"""

import hashlib

import httpx

from smartrelease.refs import DIGEST, check_registry, check_repository, check_tag

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_SINGLE_IMAGE = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")


class RegistryError(Exception):
    """The registry answered something other than what was asked (never holds credentials)."""


def registry_url(registry: str) -> str:
    # Plain http only for a registry on this machine (as Docker itself allows).
    host = check_registry(registry)
    local = host.startswith(("127.", "localhost"))
    return f"{'http' if local else 'https'}://{host}"


def manifest_path(repository: str, reference: str) -> str:
    """/v2/<repository>/manifests/<tag or digest>, from checked parts only: a tag
    holding '/', '..' or '#' never reaches a URL."""
    check_repository(repository)
    if not DIGEST.fullmatch(reference):
        check_tag(reference)
    return f"/v2/{repository}/manifests/{reference}"


class Registry:
    """One registry, optionally with basic-auth credentials."""

    def __init__(self, registry: str, *, username: str | None = None, password: str | None = None, timeout_s: float = 10):
        self.registry = registry
        auth = httpx.BasicAuth(username, password) if username and password else None
        self._http = httpx.Client(base_url=registry_url(registry), auth=auth, timeout=timeout_s, follow_redirects=True)

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()

    def _get(self, method: str, path: str, accept: str = MANIFEST_TYPES, **kwargs) -> httpx.Response:
        try:
            return self._http.request(method, path, headers={"Accept": accept, **kwargs.pop("headers", {})}, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.registry} unreachable: {type(exc).__name__}") from None

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """A manifest's exact bytes and media type (the digest is over these bytes), or None."""
        resp = self._get("GET", manifest_path(repository, reference))
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"registry {self.registry}: manifest {repository}:{reference} answered HTTP {resp.status_code}")
        return resp.content, resp.headers.get("Content-Type", "")

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Store `body` under `tag` (the layers are already there: nothing is pulled or
        pushed but these bytes); returns the digest the registry computed."""
        resp = self._get("PUT", manifest_path(repository, check_tag(tag)), content=body, headers={"Content-Type": media_type})
        if resp.status_code not in (200, 201):
            raise RegistryError(f"registry {self.registry}: PUT {repository}:{tag} answered HTTP {resp.status_code}")
        return resp.headers.get("Docker-Content-Digest", "")

    def digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag (or digest) resolves to, or None when it does not exist."""
        resp = self._get("HEAD", manifest_path(repository, reference))
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"registry {self.registry}: HEAD {repository}:{reference} answered HTTP {resp.status_code}")
        digest = resp.headers.get("Docker-Content-Digest")
        if digest is None:
            # The header is optional for a registry: the digest is the manifest's own hash.
            found = self.manifest(repository, reference)
            if found is None:
                return None
            digest = "sha256:" + hashlib.sha256(found[0]).hexdigest()
        if not DIGEST.fullmatch(digest):
            raise RegistryError(f"registry {self.registry}: {repository}:{reference} has a malformed digest "
                                f"{digest[:80]!r} (expected sha256:<64 hex digits>)")
        return digest

    def labels(self, repository: str, digest: str) -> dict[str, str]:
        """The image config's labels (OCI version, revision, created), read from the registry."""
        resp = self._get("GET", manifest_path(repository, digest))
        if resp.status_code != 200:
            raise RegistryError(f"registry {self.registry}: manifest {repository}@{digest} answered HTTP {resp.status_code}")
        try:
            manifest = resp.json()
            media_type = manifest.get("mediaType", resp.headers.get("Content-Type"))
            config_digest = manifest["config"]["digest"] if media_type in _SINGLE_IMAGE else None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RegistryError(f"registry {self.registry}: {repository}@{digest} is not an image manifest") from None
        if media_type not in _SINGLE_IMAGE:
            raise RegistryError(f"{repository}@{digest} is a multi-platform index; a single-platform image is expected")
        if not isinstance(config_digest, str) or not DIGEST.fullmatch(config_digest):
            raise RegistryError(f"registry {self.registry}: {repository}@{digest} names a malformed config digest")
        blob = self._get("GET", f"/v2/{repository}/blobs/{config_digest}", accept="*/*")
        if blob.status_code != 200:
            raise RegistryError(f"registry {self.registry}: config of {repository}@{digest} answered HTTP {blob.status_code}")
        try:
            labels = (blob.json().get("config") or {}).get("Labels") or {}
        except (ValueError, AttributeError):
            raise RegistryError(f"registry {self.registry}: config of {repository}@{digest} is not JSON") from None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
