"""The one HTTP client factory: TLS verified against the system trust store or the
environment's private CA, bounded timeouts, no redirects followed silently."""

import ssl

import httpx

from blocks.release_target import ReleaseTarget
from smartrelease.errors import ConfigError

DEFAULT_TIMEOUT_S = 10.0


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The system store (and SSL_CERT_FILE), or the private CA in `ca_bundle`; httpx's
    own default would use certifi's bundle instead, which is not what the runbook checks.
    A CA file that is missing or holds no PEM certificate is a ConfigError."""
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except FileNotFoundError:
        raise ConfigError(f"RELEASE_CA_BUNDLE {ca_bundle} does not exist") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"RELEASE_CA_BUNDLE {ca_bundle} is not a PEM certificate file "
                          f"({getattr(exc, 'reason', None) or type(exc).__name__})") from None


def client(target: ReleaseTarget, *, timeout_s: float = DEFAULT_TIMEOUT_S, auth: httpx.Auth | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=target.public_url or "",
        verify=ssl_context(target.ca_bundle),
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        follow_redirects=False,
        auth=auth,
    )
