"""Reading the image registry over its HTTP API (Docker Registry v2), with httpx.

Reading the manifest and the image config is how the release learns what a tag
points to and what an image was built from, without pulling a single layer.
"""

import re

import httpx

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_SINGLE_IMAGE = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(Exception):
    """The registry answered something other than what was asked (never holds credentials)."""


def registry_url(registry: str) -> str:
    # Plain http only for a registry on this machine (as Docker itself allows).
    host = registry.split("/")[0]
    local = host.startswith(("127.", "localhost")) or host.startswith("[::1]")
    return f"{'http' if local else 'https'}://{host}"


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

    def _get(self, method: str, path: str, accept: str = MANIFEST_TYPES) -> httpx.Response:
        try:
            return self._http.request(method, path, headers={"Accept": accept})
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.registry} unreachable: {type(exc).__name__}") from None

    def digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag (or digest) resolves to, or None when it does not exist."""
        resp = self._get("HEAD", f"/v2/{repository}/manifests/{reference}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"registry {self.registry}: HEAD {repository}:{reference} answered HTTP {resp.status_code}")
        return resp.headers["Docker-Content-Digest"]

    def labels(self, repository: str, digest: str) -> dict[str, str]:
        """The image config's labels (OCI version, revision, created), read from the registry."""
        resp = self._get("GET", f"/v2/{repository}/manifests/{digest}")
        if resp.status_code != 200:
            raise RegistryError(f"registry {self.registry}: manifest {repository}@{digest} answered HTTP {resp.status_code}")
        manifest = resp.json()
        if manifest.get("mediaType", resp.headers.get("Content-Type")) not in _SINGLE_IMAGE:
            raise RegistryError(f"{repository}@{digest} is a multi-platform index; a single-platform image is expected")
        blob = self._get("GET", f"/v2/{repository}/blobs/{manifest['config']['digest']}", accept="*/*")
        if blob.status_code != 200:
            raise RegistryError(f"registry {self.registry}: config of {repository}@{digest} answered HTTP {blob.status_code}")
        return (blob.json().get("config") or {}).get("Labels") or {}
