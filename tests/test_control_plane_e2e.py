"""Prefect as the control plane, end to end: the suite's server on PostgreSQL, the
deployments applied, a real process worker per environment, runs triggered the way
CI triggers them (`smartrelease trigger`), against the shared sandbox."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterName, TaskRunFilter,
                                            TaskRunFilterFlowRunId)

from blocks import import_env_file
from deployments.apply import apply, worker_command
from flows.history import read_history
from flows.lock import environment_lock, holder, me
from sandbox.app_changes import commit_version
from tests.conftest import SHARED_ENV, SENTINELS, assert_no_secret
from tests.test_cli import smartrelease

pytestmark = pytest.mark.e2e
ENV, SIDE = SHARED_ENV, SHARED_ENV + "-side"


class Worker:
    def __init__(self, environment: str, log: Path):
        self.log = log
        command = worker_command(environment)
        self.proc = subprocess.Popen(list(command.argv), env=dict(command.env), cwd=command.cwd,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def plane(shared_sandbox, tmp_path_factory):
    """Deployments for the sandbox's environment and a second one (the same sandbox
    under another name: its own blocks, lock, pool and worker)."""
    import_env_file(shared_sandbox.settings.env_file, SIDE)
    apply([ENV, SIDE])
    logs = tmp_path_factory.mktemp("workers")
    workers = {env: Worker(env, logs / f"{env}.log") for env in (ENV, SIDE)}
    try:
        yield shared_sandbox, workers
    finally:
        for worker in workers.values():
            worker.stop()


def trigger(*args: str) -> tuple[int, dict, str]:
    out = smartrelease("trigger", *args, "--json")
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


def runs_of(deployment: str) -> list:
    flow, name = deployment.split("/")
    with get_client(sync_client=True) as client:
        return [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(
            any_=[name])), limit=200) if r.name.startswith(flow)]


def _task_span(flow_run_id: str) -> tuple:
    """(first start, last end) of the run's task runs."""
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(
            any_=[flow_run_id])))
    return min(t.start_time for t in tasks if t.start_time), max(t.end_time for t in tasks if t.end_time)


def test_two_releases_at_once_run_one_after_the_other_and_a_verify_meanwhile_is_skipped(plane):
    sandbox, _ = plane
    commit_version(sandbox.app_dir, "5.0.0")
    outs = {}
    threads = [threading.Thread(target=lambda k=k: outs.update({k: trigger("release", "--env", ENV, "--wait")}))
               for k in ("a", "b")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120  # a verify while a release holds the environment
    while holder(ENV) is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert holder(ENV) is not None
    skipped_code, skipped, _ = trigger("verify", "--env", ENV, "--wait")
    for t in threads:
        t.join(timeout=600)

    assert skipped_code == 0 and skipped["state"] == "Completed", skipped["message"]
    assert skipped["message"].startswith(f"skipped: {ENV} is being changed by release-{ENV}")
    (a_code, a, _), (b_code, b, _) = outs["a"], outs["b"]
    assert a_code == b_code == 0, (a["message"], b["message"])
    spans = sorted([_task_span(a["flow_run_id"]), _task_span(b["flow_run_id"])])
    assert spans[0][1] <= spans[1][0], spans  # no step of one ran while the other's did
    rows = read_history(ENV)
    ids = [r.get("flow_run_id") for r in rows]
    assert a["flow_run_id"] in ids and b["flow_run_id"] in ids
    assert any(r["result"] == "verify skipped" and r["flow_run_id"] == skipped["flow_run_id"] for r in rows)
    with get_client(sync_client=True) as client:
        latest = client.read_latest_artifacts(limit=200)
    # The one that finished last waited, and its report says for whom.
    report = next(x for x in latest if x.key == f"release-{ENV}")
    assert "lock | passed | waited" in report.data and f"for release-{ENV} (flow run" in report.data, report.data
    assert_no_secret({"report": report.data, "skipped": json.dumps(skipped)}, SENTINELS)


def test_trigger_follows_a_run_to_its_end_with_the_exit_code_ci_needs(plane):
    code, run, progress = trigger("verify", "--env", ENV, "--wait")
    assert code == 0 and run["state"] == "Completed", (run, progress)
    assert run["url"].endswith(f"/runs/flow-run/{run['flow_run_id']}")
    assert "verify    verify: completed" in progress  # each step as it finishes

    code, failed, _ = trigger("verify", "--env", ENV, "-p", "expect_version=0.0.1", "--wait")
    assert code == 1 and failed["state"] == "Failed" and "verify" in failed["message"]

    # Bad input: exit 2, and no run was created.
    before = len(runs_of(f"release/{ENV}"))
    out = smartrelease("trigger", "release", "--env", ENV, "-p", "versoin=9.9.9", "--wait")
    assert out.returncode == 2 and "-p versoin: release has no such parameter" in out.stderr
    assert len(runs_of(f"release/{ENV}")) == before

    # A retried CI job (same key) attaches to its run: one run, not two.
    key = f"pipeline-{time.time_ns()}"
    code, first, _ = trigger("verify", "--env", ENV, "--idempotency-key", key, "--wait")
    code2, again, said = trigger("verify", "--env", ENV, "--idempotency-key", key, "--wait")
    assert code == code2 == 0 and first["flow_run_id"] == again["flow_run_id"]
    assert not first["attached"] and again["attached"] and "attached to" in said


def test_a_cancelled_run_exits_1(plane):
    # The run waits for the lock this test holds; it is cancelled while it waits.
    result = {}
    with environment_lock(ENV, me("the test")):
        thread = threading.Thread(target=lambda: result.update(out=smartrelease(
            "trigger", "verify", "--env", ENV, "-p", "wait=true", "--wait", "--json")))
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = [r for r in runs_of(f"verify/{ENV}") if r.state and r.state.is_running()]
            if waiting:
                break
            time.sleep(0.5)
        assert waiting, "the verify run never started"
        from prefect.states import Cancelling
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(waiting[0].id, Cancelling(), force=True)
        thread.join(timeout=120)
    out = result["out"]
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["state"] == "Cancelled"


def test_a_run_for_one_environment_runs_on_its_own_worker_only(plane):
    _, workers = plane
    code, run, _ = trigger("preflight", "--env", SIDE, "--wait")
    assert code == 0, run
    assert run["flow_run_id"] in workers[SIDE].text()
    assert run["flow_run_id"] not in workers[ENV].text()
