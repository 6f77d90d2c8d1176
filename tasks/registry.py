"""Reading the image registry over its HTTP API (Docker Registry v2)."""

import httpx

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def registry_url(registry: str) -> str:
    # Plain http only for a registry on this machine (as Docker itself allows).
    host = registry.split("/")[0]
    local = host.startswith(("127.", "localhost")) or host.startswith("[::1]")
    return f"{'http' if local else 'https'}://{host}"


def manifest_digest(registry: str, repository: str, tag: str, timeout_s: float = 10) -> str | None:
    """The digest a tag points to, or None when the tag does not exist."""
    url = f"{registry_url(registry)}/v2/{repository}/manifests/{tag}"
    resp = httpx.head(url, headers={"Accept": MANIFEST_TYPES}, timeout=timeout_s)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.headers["Docker-Content-Digest"]
