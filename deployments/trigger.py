"""CI's way in: create a flow run of an environment's deployment over the Prefect
API, and follow it to its end.

    smartrelease trigger release --env prod -p version=1.4.0 --wait --idempotency-key "$CI_PIPELINE_ID"

Everything is checked before the run is created (the flow, the environment's blocks
and deployment, each parameter against the deployment's schema and this project's
rules), so bad input creates nothing. The idempotency key makes a retried CI job
attach to the run it already started instead of starting a second one.

Without Python, the same over REST (docs/control-plane.md has the curl lines): the deployment's
id from `GET {api}/deployments/name/release/prod`, then
`POST {api}/deployments/{id}/create_flow_run` with
`{"parameters": {...}, "idempotency_key": "..."}`, then `GET {api}/flow_runs/{run id}`
until `state.type` is final.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.utilities.schema_tools.validation import validate

from smartrelease.deployments.catalog import FLOW_NAMES, deployment_name
from smartrelease.flows.requester import requested_by_tag
from smartrelease.flows.steps import PROGRESS_KEY
from smartrelease.errors import ConfigError
from smartrelease.links import run_url
from smartrelease.refs import check_dev_tag, check_environment_name, check_version
from smartrelease.report import StepResult

POLL_S = 1.0
# Parameters this project checks beyond the schema's types.
_RULES: dict[str, Callable[[str, str], object]] = {
    "version": check_version, "expect_version": check_version, "to_version": check_version,
    "from_tag": check_dev_tag,
}


@dataclass
class Triggered:
    flow_run_id: UUID
    name: str
    url: str
    attached: bool  # the idempotency key named a run already started: no new one


def parse_parameters(pairs: list[str]) -> dict:
    """`key=value` pairs; a value that is JSON (true, 3, {"backend": "sha256:…"}) is
    taken as JSON, any other as text."""
    parameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"-p {pair!r}: expected key=value")
        try:
            parameters[key] = json.loads(value)
        except json.JSONDecodeError:
            parameters[key] = value
    return parameters


def check_parameters(flow: str, environment: str, parameters: dict, schema: dict) -> dict:
    """The run's parameters, checked (ConfigError names the first bad one)."""
    known = set(schema.get("properties", {}))
    if "environment" in parameters:
        raise ConfigError(f"-p environment: not a parameter here; {flow}/{environment} runs {environment} only "
                          "(use --env)")
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ConfigError(f"-p {unknown[0]}: {flow} has no such parameter (it takes: "
                          f"{', '.join(sorted(known - {'environment'}))})")
    errors = validate({"environment": environment, **parameters}, schema, ignore_required=False,
                      allow_none_with_default=True)
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "parameters"
        raise ConfigError(f"-p {where}: {first.message}")
    for key, value in parameters.items():
        if key in _RULES and value is not None:
            _RULES[key](str(value), f"-p {key}")
    return parameters


def trigger(flow: str, environment: str, parameters: dict, idempotency_key: str | None = None) -> Triggered:
    """Create (or, by idempotency key, find) the flow run; nothing is created when an
    input is bad."""
    if flow not in FLOW_NAMES:
        raise ConfigError(f"unknown flow {flow!r} (one of: {', '.join(FLOW_NAMES)})")
    check_environment_name(environment)
    from smartrelease.blocks import load_environment

    load_environment(environment)  # "no blocks named …" before anything is created
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name(flow, environment))
        except ObjectNotFound:
            raise ConfigError(f"no deployment {deployment_name(flow, environment)} on this Prefect server: run "
                              f"`smartrelease deployments apply --env {environment}`") from None
        check_parameters(flow, environment, parameters, deployment.parameter_openapi_schema or {})
        before = _runs_with_key(client, deployment.id, idempotency_key)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters,
                                                     idempotency_key=idempotency_key, tags=[requested_by_tag()])
    return Triggered(run.id, run.name, run_url(run.id), attached=run.id in before)


def _runs_with_key(client, deployment_id: UUID, key: str | None) -> set[UUID]:
    """The deployment's recent runs made with `key` (the server itself is what keeps a
    key to one run; this only tells "attached" from "started")."""
    if not key:
        return set()
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(
        any_=[deployment_id])), sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
    return {r.id for r in runs if r.idempotency_key == key}


def _finished_steps(client, flow_run_id: UUID) -> list[tuple[str, StepResult]]:
    """(flow, step) for each step the run has published as finished (flows/steps.py),
    oldest first."""
    artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    rows = [row for a in artifacts if a.key and a.key.startswith(PROGRESS_KEY) and a.type == "table"
            for row in (json.loads(a.data) if isinstance(a.data, str) else a.data or [])]
    rows.sort(key=lambda row: row.get("at", 0))
    return [(row.get("flow", ""), StepResult.model_validate(row)) for row in rows]


def follow(flow_run_id: UUID, timeout_s: float | None,
           on_step: Callable[[str, StepResult], None] = lambda flow, step: None) -> FlowRun:
    """Poll the run until it is final (or `timeout_s` passes: then it is returned as
    it is, still running), telling `on_step` of each step as it finishes."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    told = 0
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            steps = _finished_steps(client, flow_run_id)
            for flow, step in steps[told:]:
                on_step(flow, step)
            told = max(told, len(steps))
            if run.state and run.state.is_final():
                return run
            if deadline is not None and time.monotonic() > deadline:
                return run
            time.sleep(POLL_S)


def succeeded(run: FlowRun) -> bool:
    return bool(run.state) and run.state.type == StateType.COMPLETED


def read_flow_run(flow_run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)

