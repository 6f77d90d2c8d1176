"""Runbook, deploy step 3, "Smoke tests" (postdeploy.sh / smoke-prod.sh): each
endpoint (the contract's smoke_paths) answers 200 with JSON through the public URL. One task per endpoint, run
in parallel; a 5xx or a dropped connection is retried, a 4xx is not."""

import httpx

from blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from tasks.http import client
from tasks.runbook_task import runbook_task

STEP = "smoke"


def get_json(env: Environment, path: str, step: str) -> dict:
    """GET `path` on the public URL; 200 with a JSON object, or a named failure."""
    try:
        with client(env.target, timeout_s=5) as web:
            resp = web.get(path)
    except httpx.HTTPError as exc:
        raise StepFailed(step, f"{path}: {type(exc).__name__}: {exc}", transient=True) from None
    if resp.status_code != 200:
        raise StepFailed(step, f"{path} answered HTTP {resp.status_code}", transient=resp.status_code >= 500)
    try:
        body = resp.json()
    except ValueError:
        raise StepFailed(step, f"{path} answered 200 but not JSON") from None
    if not isinstance(body, dict):
        raise StepFailed(step, f"{path} answered 200 but not a JSON object")
    return body


def check_endpoint(env: Environment, path: str) -> Finding:
    body = get_json(env, path, f"{STEP} {path}")
    return Finding(detail=f"200 {body.get('status', '')}".strip())


smoke_task = runbook_task(STEP, timeout_s=60, retries=3, retry_delay_s=0.5)(check_endpoint)
