"""Reading the image registry over its HTTP API (Docker Registry v2), with httpx.

Reading the manifest and the image config is how the release learns what a tag
points to and what an image was built from, without pulling a single layer. A tag
may name one image's manifest or an index (an OCI image index, a Docker manifest
list: what buildx pushes, with its attestations, even for one platform): either is
pinned by the digest that was pushed, and an index is read through to the image
for this platform.
"""

import hashlib
import json

import httpx

from smartrelease.refs import DIGEST, api_path, check_registry, check_repository, check_tag
from smartrelease.adapters.http import http_client, is_loopback
from smartrelease.adapters.registry_auth import RegistryAuth, RegistryAuthError

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_SINGLE_IMAGE = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
_INDEX = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
PLATFORM = {"os": "linux", "architecture": "amd64"}  # what the release hosts run


class RegistryError(Exception):
    """The registry answered something other than what was asked (never holds credentials)."""


def registry_url(registry: str) -> str:
    """Plain http only for a registry on this machine (as Docker itself allows);
    Docker Hub's API is at registry-1.docker.io."""
    host = check_registry(registry)
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
    return f"{'http' if is_loopback(host) else 'https'}://{host}"


def manifest_path(repository: str, reference: str, registry: str = "") -> str:
    """/v2/<repository>/manifests/<tag or digest>, from checked parts only: a tag
    holding '/', '..' or '#' never reaches a URL."""
    check_repository(repository)
    if not DIGEST.fullmatch(reference):
        check_tag(reference)
    return f"/v2/{api_path(registry, repository)}/manifests/{reference}"


class Registry:
    """One registry, with credentials for its Basic or token authentication, and a
    private CA (RELEASE_REGISTRY_CA_BUNDLE) when it has one. Repository paths are
    as configured (`smartaccounting/backend`); Docker Hub's `library/` is added here."""

    def __init__(self, registry: str, *, username: str | None = None, password: str | None = None,
                 ca_bundle: str | None = None, timeout_s: float = 10):
        self.registry = registry
        self._http = http_client(registry_url(registry), ca_bundle=ca_bundle, ca_setting="RELEASE_REGISTRY_CA_BUNDLE",
                                 timeout_s=timeout_s, auth=RegistryAuth(username, password), follow_redirects=True)

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()

    def _get(self, method: str, path: str, accept: str = MANIFEST_TYPES, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, headers={"Accept": accept, **kwargs.pop("headers", {})}, **kwargs)
        except RegistryAuthError as exc:
            raise RegistryError(f"registry {self.registry}: {exc}") from None
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.registry} unreachable: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise RegistryError(f"registry {self.registry} refused {method} {path.split('/manifests/')[0]} (HTTP 401): "
                                "check RELEASE_REGISTRY_USERNAME and RELEASE_REGISTRY_PASSWORD")
        return response

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """A manifest's exact bytes and media type (the digest is over these bytes), or None."""
        resp = self._get("GET", manifest_path(repository, reference, self.registry))
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"registry {self.registry}: manifest {repository}:{reference} answered HTTP {resp.status_code}")
        return resp.content, resp.headers.get("Content-Type", "")

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Store `body` under `tag` (the layers are already there: nothing is pulled or
        pushed but these bytes); returns the digest the registry computed."""
        resp = self._get("PUT", manifest_path(repository, check_tag(tag), self.registry), content=body, headers={"Content-Type": media_type})
        if resp.status_code not in (200, 201):
            raise RegistryError(f"registry {self.registry}: PUT {repository}:{tag} answered HTTP {resp.status_code}")
        return resp.headers.get("Docker-Content-Digest", "")

    def digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag (or digest) resolves to, or None when it does not exist."""
        resp = self._get("HEAD", manifest_path(repository, reference, self.registry))
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

    def _manifest_json(self, repository: str, digest: str) -> tuple[dict, str]:
        found = self.manifest(repository, digest)
        if found is None:
            raise RegistryError(f"registry {self.registry}: manifest {repository}@{digest} answered HTTP 404")
        body, content_type = found
        try:
            manifest = json.loads(body)
            return manifest, manifest.get("mediaType") or content_type
        except (ValueError, AttributeError):
            raise RegistryError(f"registry {self.registry}: {repository}@{digest} is not a manifest") from None

    def image_manifest(self, repository: str, digest: str) -> tuple[str, dict]:
        """(digest, manifest) of the image `digest` names: itself, or, for an index,
        its entry for PLATFORM (attestations, which buildx adds as `unknown/unknown`,
        are passed over)."""
        manifest, media_type = self._manifest_json(repository, digest)
        if media_type in _SINGLE_IMAGE:
            return digest, manifest
        if media_type not in _INDEX:
            shown = repr(media_type) if media_type else "no media type"  # any JSON value the registry sent
            raise RegistryError(f"registry {self.registry}: {repository}@{digest} is neither an image manifest nor "
                                f"an index ({shown if len(shown) <= 80 else shown[:79] + '…'})")
        entries = manifest.get("manifests") if isinstance(manifest.get("manifests"), list) else []
        for entry in (e for e in entries if isinstance(e, dict)):
            platform = entry.get("platform") or {}
            if isinstance(platform, dict) and all(platform.get(k) == v for k, v in PLATFORM.items()) and DIGEST.fullmatch(str(entry.get("digest"))):
                found, inner_type = self._manifest_json(repository, entry["digest"])
                if inner_type in _SINGLE_IMAGE:
                    return entry["digest"], found
        raise RegistryError(f"{repository}@{digest} is an index without an image for "
                            f"{PLATFORM['os']}/{PLATFORM['architecture']}")

    def labels(self, repository: str, digest: str) -> dict[str, str]:
        """The image config's labels (OCI version, revision, created), read from the
        registry; `digest` may name an index."""
        image_digest, manifest = self.image_manifest(repository, digest)
        try:
            config_digest = manifest["config"]["digest"]
        except (KeyError, TypeError):
            config_digest = None
        if not isinstance(config_digest, str) or not DIGEST.fullmatch(config_digest):
            raise RegistryError(f"registry {self.registry}: {repository}@{image_digest} names a malformed config digest")
        blob = self._get("GET", f"/v2/{api_path(self.registry, repository)}/blobs/{config_digest}", accept="*/*")
        if blob.status_code != 200:
            raise RegistryError(f"registry {self.registry}: config of {repository}@{digest} answered HTTP {blob.status_code}")
        try:
            labels = (blob.json().get("config") or {}).get("Labels") or {}
        except (ValueError, AttributeError):
            raise RegistryError(f"registry {self.registry}: config of {repository}@{digest} is not JSON") from None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
