"""Runbook, deploy step 4, "Metrics & auth": /metrics answers 200 with Prometheus
text to the basic-auth credentials, and 401 without them. An endpoint that answers
without credentials is open to anyone: a security finding, and the step fails.

The runbook calls metrics internal: RELEASE_METRICS_URL may name an internal URL
(`http://backend:8080/metrics`), reached at the service container's address; by
default it is /metrics on the public URL."""

from urllib.parse import urlsplit

import docker
import httpx
from prometheus_client.parser import text_string_to_metric_families

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.adapters.http import client, http_client, is_loopback
from smartrelease.adapters.images import engine
from smartrelease.adapters.running import service_url
from smartrelease.tasks.runbook_task import runbook_task

STEP = "metrics"


def _metrics_client(env: Environment) -> tuple[httpx.Client, str, str]:
    """(client, what to GET, what to call it) for the contract's metrics_url."""
    url = env.target.metrics_url
    if url.startswith("/"):
        return client(env.target, timeout_s=5), url, url
    try:
        reached = service_url(engine(timeout_s=30), env.target.compose_project or "", url)
    except LookupError as exc:
        raise StepFailed(STEP, f"{url}: {exc}", transient=True) from None
    except docker.errors.DockerException as exc:
        raise StepFailed(STEP, f"cannot read {url}'s service address from Docker Engine: {exc}", transient=True) from None
    parts = urlsplit(reached)
    if reached == url and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise StepFailed(STEP, f"RELEASE_METRICS_URL {url} is plain HTTP to a host that is not a service of Compose "
                               f"project {env.target.compose_project}: the metrics credentials are not sent across a "
                               "network in clear; use https://, or name a service of the project")
    return http_client("", ca_bundle=env.target.ca_bundle, timeout_s=5), reached, url


def check_metrics(env: Environment) -> Finding:
    user, password = env.app.metrics_basic_auth_user, env.app.metrics_basic_auth_pass
    if not (user and password):
        return Finding(detail=f"metrics credentials not set: {env.target.metrics_url} not checked", warning=True)
    web, target, shown = _metrics_client(env)
    try:
        with web:
            authed = web.get(target, auth=httpx.BasicAuth(user, password.get_secret_value()))
            anonymous = web.get(target)
    except httpx.HTTPError as exc:
        raise StepFailed(STEP, f"{shown}: {type(exc).__name__}: {exc}", transient=True) from None
    if anonymous.status_code == 200:
        raise StepFailed(STEP, f"SECURITY: {shown} answers HTTP 200 without credentials: the endpoint is open to anyone")
    if anonymous.status_code != 401:
        raise StepFailed(STEP, f"{shown} without credentials answered HTTP {anonymous.status_code}, expected 401",
                         transient=anonymous.status_code >= 500)
    if authed.status_code != 200:
        raise StepFailed(STEP, f"{shown} with the configured credentials answered HTTP {authed.status_code}",
                         transient=authed.status_code >= 500)
    try:
        families = list(text_string_to_metric_families(authed.text))
    except ValueError as exc:
        raise StepFailed(STEP, f"{shown} is not parseable Prometheus text: {exc}") from None
    if not families:
        raise StepFailed(STEP, f"{shown} answered 200 with no metrics")
    samples = sum(len(f.samples) for f in families)
    return Finding(detail=f"{shown}: {len(families)} metric families, {samples} samples; 401 without credentials")


metrics_task = runbook_task(STEP, timeout_s=60, retries=2, retry_delay_s=1)(check_metrics)
