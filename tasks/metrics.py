"""Runbook, deploy step 4, "Metrics & auth": /metrics answers 200 with Prometheus
text to the basic-auth credentials, and 401 without them. An endpoint that answers
without credentials is open to anyone: a security finding, and the step fails."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from tasks.http import client
from tasks.runbook_task import runbook_task

STEP = "metrics"
PATH = "/metrics"


def check_metrics(env: Environment) -> Finding:
    user, password = env.app.metrics_basic_auth_user, env.app.metrics_basic_auth_pass
    if not (user and password):
        return Finding(detail="metrics credentials not set: /metrics not checked", warning=True)
    try:
        with client(env.target, timeout_s=5) as web:
            authed = web.get(PATH, auth=httpx.BasicAuth(user, password.get_secret_value()))
            anonymous = web.get(PATH)
    except httpx.HTTPError as exc:
        raise StepFailed(STEP, f"{PATH}: {type(exc).__name__}: {exc}", transient=True) from None
    if anonymous.status_code == 200:
        raise StepFailed(STEP, f"SECURITY: {PATH} answers HTTP 200 without credentials: the endpoint is open to anyone")
    if anonymous.status_code != 401:
        raise StepFailed(STEP, f"{PATH} without credentials answered HTTP {anonymous.status_code}, expected 401",
                         transient=anonymous.status_code >= 500)
    if authed.status_code != 200:
        raise StepFailed(STEP, f"{PATH} with the configured credentials answered HTTP {authed.status_code}",
                         transient=authed.status_code >= 500)
    try:
        families = list(text_string_to_metric_families(authed.text))
    except ValueError as exc:
        raise StepFailed(STEP, f"{PATH} is not parseable Prometheus text: {exc}") from None
    if not families:
        raise StepFailed(STEP, f"{PATH} answered 200 with no metrics")
    samples = sum(len(f.samples) for f in families)
    return Finding(detail=f"{len(families)} metric families, {samples} samples; 401 without credentials")


metrics_task = runbook_task(STEP, timeout_s=60, retries=2, retry_delay_s=1)(check_metrics)
