"""Runbook, deploy step 3, "Smoke tests" (postdeploy.sh / smoke-prod.sh): each
endpoint (the contract's smoke_paths) answers 200 with JSON through the public URL, or,
where the edge routes it to another service, on the backend's own address
(tasks/routes.py). One task per endpoint, run in parallel; a 5xx or a dropped
connection is retried, a 4xx is not."""

import httpx

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.tasks import routes
from smartrelease.adapters.http import client
from smartrelease.tasks.runbook_task import runbook_task

STEP = "smoke"


def get_json(env: Environment, path: str, step: str) -> dict:
    """GET `path` on the public URL; 200 with a JSON object, or a named failure."""
    try:
        with client(env.target, timeout_s=5) as web:
            resp = web.get(path)
    except httpx.HTTPError as exc:
        raise StepFailed(step, f"{path}: {type(exc).__name__}: {exc}", transient=True) from None
    return json_of(resp, path, step)


def json_of(resp: httpx.Response, path: str, step: str) -> dict:
    """The JSON object of a 200 answer to `path`, or a named failure."""
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
    """Through the public URL, or on the backend's own address where the edge routes
    `path` elsewhere (tasks/routes.py); the detail says which."""
    step = f"{STEP} {path}"
    answer = routes.get(env, path, step)
    try:
        body = json_of(answer.response, path, step)
    except StepFailed as exc:
        if answer.route == routes.PUBLIC:
            raise
        raise StepFailed(step, f"{exc.reason}, {answer.route}", transient=exc.transient) from None
    return Finding(detail=f"200 {body.get('status', '')}".strip() + f", {answer.route}")


smoke_task = runbook_task(STEP, timeout_s=60, retries=3, retry_delay_s=0.5)(check_endpoint)
