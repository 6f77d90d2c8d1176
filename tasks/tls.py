"""Preflight `tls`: `curl -I https://<host>/api/health` (a HEAD request to the contract's
api_health_path) with a trusted chain and 200 OK, plus how many days the certificate
has left."""

import socket
import ssl
import time
from urllib.parse import urlsplit

import httpx

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.adapters import http
from smartrelease.tasks.runbook_task import runbook_task

STEP = "tls"

# OpenSSL X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code.
_EXPIRED = 10
_NOT_YET_VALID = 9
_HOSTNAME_MISMATCH = 62
_UNTRUSTED = {2, 18, 19, 20, 21, 27}


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def describe_verify_error(err: ssl.SSLCertVerificationError, host: str) -> str:
    code = err.verify_code
    if code == _EXPIRED:
        return f"certificate of {host} has expired"
    if code == _NOT_YET_VALID:
        return f"certificate of {host} is not yet valid"
    if code == _HOSTNAME_MISMATCH:
        return f"certificate does not match host name {host}"
    if code in _UNTRUSTED:
        return f"untrusted certificate chain for {host} ({err.verify_message})"
    return f"certificate of {host} failed verification ({err.verify_message})"


def days_left(cert: dict, now: float | None = None) -> float:
    return (ssl.cert_time_to_seconds(cert["notAfter"]) - (now if now is not None else time.time())) / 86400


AFTER_LAUNCH = "the certificate and the health check are checked after launch"


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
        return True
    except (socket.gaierror, UnicodeError):
        return False


def check_tls(env: Environment, first_release: bool = False) -> Finding:
    """The runbook's TLS check. Before an environment's first release nothing may serve
    the public URL yet (the edge is part of the stack about to start): then the host
    must resolve, and what does answer is checked, but an unanswered URL or a health
    check that is not 200 is a warning; the release runs the full check after launch."""
    if not env.target.public_url:
        raise StepFailed(STEP, "RELEASE_PUBLIC_URL is not set")
    host = urlsplit(env.target.public_url).hostname or env.target.public_url
    path = env.target.api_health_path
    if first_release and not _resolves(host):
        raise StepFailed(STEP, f"{host} does not resolve (DNS): the first release could not be reached")
    try:
        with http.client(env.target) as client, client.stream("HEAD", path) as resp:
            ssl_object = resp.extensions["network_stream"].get_extra_info("ssl_object")
            cert = ssl_object.getpeercert() if ssl_object else None
            status = resp.status_code
    except httpx.ConnectError as exc:
        if verr := _cause(exc, ssl.SSLCertVerificationError):
            raise StepFailed(STEP, describe_verify_error(verr, host)) from None
        if serr := _cause(exc, ssl.SSLError):
            raise StepFailed(STEP, f"TLS handshake with {host} failed: {serr.reason or serr}") from None
        if first_release:
            return Finding(detail=f"first release: nothing serves {host} yet; {AFTER_LAUNCH}", warning=True)
        raise StepFailed(STEP, f"cannot connect to {host}: {exc}", transient=True) from None
    except httpx.TimeoutException:
        raise StepFailed(STEP, f"{host} did not answer in time", transient=True) from None
    except httpx.HTTPError as exc:
        raise StepFailed(STEP, f"HEAD {path} on {host} failed: {type(exc).__name__}", transient=True) from None

    if not cert:
        raise StepFailed(STEP, f"{env.target.public_url} is not served over TLS")
    left = days_left(cert)
    expiry = f"certificate expires in {left:.1f} days ({cert['notAfter']})"
    problems, notes = [], []
    if status != 200 and first_release:
        notes.append(f"first release: HEAD {path} answered {status}; {AFTER_LAUNCH}")
    elif status != 200:
        problems.append(f"HEAD {path} answered {status}, expected 200")
    if left < env.target.tls_fail_days:
        problems.append(f"{expiry}, under the {env.target.tls_fail_days}-day limit")
    if problems:
        raise StepFailed(STEP, "; ".join(problems))
    if left < env.target.tls_warn_days:
        notes.append(f"{expiry}, under {env.target.tls_warn_days} days")
    if notes:
        return Finding(detail=f"{status}, trusted chain; warning: " + "; ".join(notes), warning=True)
    return Finding(detail=f"200 OK, trusted chain, {expiry}")


tls_task = runbook_task(STEP, timeout_s=30, retries=2, retry_delay_s=2)(check_tls)
