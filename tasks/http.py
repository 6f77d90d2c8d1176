"""The one HTTP client factory: TLS verified against the system trust store or the
environment's private CA, bounded timeouts, no redirects followed silently."""

import ssl

import httpx

from blocks.release_target import ReleaseTarget

DEFAULT_TIMEOUT_S = 10.0


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    # ssl's default context reads the system store (and SSL_CERT_FILE); httpx's own
    # default would use certifi's bundle instead, which is not what the runbook checks.
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()


def client(target: ReleaseTarget, *, timeout_s: float = DEFAULT_TIMEOUT_S, auth: httpx.Auth | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=target.public_url or "",
        verify=ssl_context(target.ca_bundle),
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        follow_redirects=False,
        auth=auth,
    )
