"""The one HTTP client policy, for the app's public URL and the image registry alike:
TLS verified against the system trust store or a private CA, bounded timeouts,
redirects followed only where asked (a registry sends blobs to storage), and plain
HTTP only to this machine."""

import ipaddress
import ssl

import httpx

from blocks.release_target import ReleaseTarget
from smartrelease.errors import ConfigError

DEFAULT_TIMEOUT_S = 10.0


def ssl_context(ca_bundle: str | None, setting: str = "RELEASE_CA_BUNDLE") -> ssl.SSLContext:
    """The system store (and SSL_CERT_FILE), or the private CA in `ca_bundle`; httpx's
    own default would use certifi's bundle instead, which is not what the runbook checks.
    A CA file that is missing or holds no PEM certificate is a ConfigError naming `setting`."""
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except FileNotFoundError:
        raise ConfigError(f"{setting} {ca_bundle} does not exist") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{setting} {ca_bundle} is not a PEM certificate file "
                          f"({getattr(exc, 'reason', None) or type(exc).__name__})") from None


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


def client(target: ReleaseTarget, *, timeout_s: float = DEFAULT_TIMEOUT_S, auth: httpx.Auth | None = None) -> httpx.Client:
    """A client of the app's public URL."""
    return http_client(target.public_url or "", ca_bundle=target.ca_bundle, timeout_s=timeout_s, auth=auth)
