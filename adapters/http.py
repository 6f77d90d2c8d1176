"""The one HTTP client policy, for the app's public URL and the image registry alike:
TLS verified against the system trust store or a private CA, bounded timeouts,
redirects followed only where asked (a registry sends blobs to storage), and plain
HTTP only to this machine."""

import functools
import hashlib
import ipaddress
import os
import ssl
from typing import TYPE_CHECKING

import httpx

from smartrelease.errors import ConfigError

if TYPE_CHECKING:  # (the server's and the journal's health checks use this module without Prefect's blocks)
    from smartrelease.blocks.release_target import ReleaseTarget

DEFAULT_TIMEOUT_S = 10.0


def ssl_context(ca_bundle: str | None, setting: str = "RELEASE_CA_BUNDLE") -> ssl.SSLContext:
    """The system store (and SSL_CERT_FILE), or the private CA in `ca_bundle`; httpx's
    own default would use certifi's bundle instead, which is not what the runbook checks.
    A CA file that is missing or holds no PEM certificate is a ConfigError naming `setting`.

    One context per trust store and process: loading a store costs about 20 ms of CPU,
    and a run makes hundreds of clients. A file changed in place is loaded again."""
    if not ca_bundle:
        return _context(None, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    try:
        with open(ca_bundle, "rb") as f:  # (a renewed CA can have the old one's inode, time to the tick and size)
            content = hashlib.sha256(f.read()).hexdigest()
        return _context(ca_bundle, content)
    except FileNotFoundError:
        raise ConfigError(f"{setting} {ca_bundle} does not exist") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{setting} {ca_bundle} is not a PEM certificate file "
                          f"({getattr(exc, 'reason', None) or type(exc).__name__})") from None


@functools.lru_cache(maxsize=16)
def _context(cafile: str | None, *identity) -> ssl.SSLContext:
    """`identity`: what tells this store from another at the same path (the default
    store's variables, a file's SHA-256). httpx never changes a context it is given,
    so clients share it."""
    return ssl.create_default_context(cafile=cafile)


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address: the only hosts spoken to over plain HTTP
    (as Docker Engine itself allows). `localhost-reg.corp` is not one."""
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_client(base_url: str, *, ca_bundle: str | None = None, ca_setting: str = "RELEASE_CA_BUNDLE",
                timeout_s: float = DEFAULT_TIMEOUT_S, auth: httpx.Auth | None = None,
                follow_redirects: bool = False) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        verify=ssl_context(ca_bundle, ca_setting),
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        follow_redirects=follow_redirects,
        auth=auth,
    )


def answers(url: str, ok: tuple[int, ...] = (200,), timeout_s: float = 2.0, ca_bundle: str | None = None) -> bool:
    """Whether a GET of `url` answers one of the `ok` statuses within `timeout_s`
    (a health check: a server this tool started, a registry)."""
    try:
        with http_client("", timeout_s=timeout_s, ca_bundle=ca_bundle) as c:
            return c.get(url).status_code in ok
    except httpx.HTTPError:
        return False


def client(target: "ReleaseTarget", *, timeout_s: float = DEFAULT_TIMEOUT_S, auth: httpx.Auth | None = None) -> httpx.Client:
    """A client of the app's public URL."""
    return http_client(target.public_url or "", ca_bundle=target.ca_bundle, timeout_s=timeout_s, auth=auth)
