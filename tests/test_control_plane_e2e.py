"""Prefect as the control plane, end to end: the suite's server on PostgreSQL, the
deployments applied, a real process worker per environment, runs triggered the way
CI triggers them (`smartrelease trigger`), against the shared sandbox."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterId,
                                            FlowRunFilterState, FlowRunFilterStateType, TaskRunFilter,
                                            TaskRunFilterFlowRunId)
from prefect.client.schemas.objects import TERMINAL_STATES

from smartrelease.blocks import load_environment
from smartrelease.record.lock import environment_lock, holder, import_environment, me
from smartrelease.deployments.catalog import FLOW_NAMES, deployment_name
from smartrelease.deployments.trigger import follow
from smartrelease.record.history import read_history
from smartrelease.flows.release import release_steps
from smartrelease.sandbox.app_changes import commit_version
from smartrelease.sandbox.plane import Plane, down, up
from tests.conftest import SHARED_ENV, SENTINELS, assert_no_secret
from tests.test_cli import smartrelease

pytestmark = pytest.mark.e2e
ENV, SIDE, DRILL = SHARED_ENV, SHARED_ENV + "-side", SHARED_ENV + "-drill"


class LeaseDrill:
    """A release SIGKILLed at the module's start while it holds its environment's lock
    (in its first steps, before it changes anything), and a second holder waiting in a
    thread for the release's lease (60 s, the server's minimum) to run out: the
    module's other tests run meanwhile, and the last one checks when the second got
    the lock. The drill's environment is the sandbox under another name, with a lock
    of its own."""

    def __init__(self, env_file: Path, directory: Path):
        drill_file = directory / f".env.{DRILL}"  # `release --env-file` names the environment after the file
        shutil.copy(env_file, drill_file)
        import_environment(drill_file, DRILL)
        release = subprocess.Popen([sys.executable, "-m", "smartrelease.cli", "release", "--env-file", str(drill_file)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while not ((h := holder(DRILL)) and h.what.startswith(f"release-{DRILL} ")):
            assert release.poll() is None and time.monotonic() < deadline, "the drill's release never held the lock"
            time.sleep(0.1)
        os.killpg(release.pid, signal.SIGKILL)
        release.wait(timeout=30)
        self.killed_at = time.monotonic()
        self.held_after_kill = holder(DRILL)
        self.got_it_at: float | None = None
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        with environment_lock(DRILL, me("next holder"), timeout_s=300):
            self.got_it_at = time.monotonic()


@pytest.fixture(scope="module")
def plane(shared_sandbox, prefect_server, tmp_path_factory):
    """`sandbox up --server`'s control plane (sandbox/plane.py) on the suite's server, for
    the sandbox's environment and a second one (the same sandbox under another name:
    its own blocks, lock, pool and worker). The tests trigger every run themselves:
    the schedules are paused, so no scheduled verify takes the lock under them."""
    drill = LeaseDrill(shared_sandbox.settings.env_file, tmp_path_factory.mktemp("drill"))
    control = Plane(tmp_path_factory.mktemp("plane"), prefect_server)
    env_file = shared_sandbox.settings.env_file
    said = up(control, {ENV: env_file, SIDE: env_file}, schedules=False)
    assert [line for line in said if line.startswith("worker for")] == [
        f"worker for smartrelease-{e} polling (pid {control.worker(e).pid()}, log {control.worker(e).log_file})"
        for e in (ENV, SIDE)], said
    try:
        yield shared_sandbox, control, drill
    finally:  # the workers with their flow runs (nothing runs on after the module); the suite's server stays
        pids = [control.worker(e).pid() for e in (ENV, SIDE)]
        assert down(control) == [f"worker for smartrelease-{e} stopped" for e in (ENV, SIDE)]
        assert [control.worker(e).pid() for e in (ENV, SIDE)] == [None, None] and all(pids)


@pytest.fixture(autouse=True)
def no_run_left_behind(plane):
    """A test that fails while a run it started still goes on (a release paused for
    approval holds the environment's lock for up to an hour) would leave every later
    test on the environment waiting for it, this module's and the next ones': in CI
    once, one failure became four and the run took 73 minutes. Whatever runs of the
    module's deployments have not ended when a test ends are cancelled, as the UI's
    Cancel does, and waited for."""
    yield
    with get_client(sync_client=True) as client:
        ids = [client.read_deployment_by_name(deployment_name(f, e)).id for f in FLOW_NAMES for e in (ENV, SIDE)]
        going = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=ids),
                              state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=list(TERMINAL_STATES))))
        left = client.read_flow_runs(flow_run_filter=going)
        if not left:
            return
        from prefect.states import Cancelled, Cancelling

        for run in left:
            client.set_flow_run_state(run.id, Cancelling(message="left behind by a test that ended"), force=True)
        deadline = time.monotonic() + 120  # the worker kills each run's process; the run frees the lock
        while (left := client.read_flow_runs(flow_run_filter=going)) and time.monotonic() < deadline:
            time.sleep(1)
        for run in left:  # no process of it was found to end
            client.set_flow_run_state(run.id, Cancelled(message="left behind by a test that ended"), force=True)


def trigger(*args: str) -> tuple[int, dict, str]:
    out = smartrelease("trigger", *args, "--json")
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


def released_through_the_worker(sandbox) -> None:
    """What a verify needs: a release by this module's worker. The racing test, first,
    makes two; a test run alone makes one here."""
    if not any(r.state and r.state.is_completed() for r in runs_of(f"release/{ENV}")):
        commit_version(sandbox.app_dir, "4.0.0")
        code, run, _ = trigger("release", "--env", ENV, "--wait")
        assert code == 0 and run["message"] == "released 4.0.0", report_of(run["flow_run_id"])


def runs_of(deployment: str) -> list:
    """The deployment's flow runs (a run made in the UI has a random name until it starts)."""
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(
            any_=[deployment_id])), limit=200)


def report_of(flow_run_id: str) -> str:
    """The run's message and release report (what a failed assertion shows)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return f"{run.state.message}\n" + "\n".join(str(a.data) for a in artifacts if a.key and a.key.startswith("release-"))


def _task_span(flow_run_id: str) -> tuple:
    """(first start, last end) of the run's task runs."""
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(
            any_=[flow_run_id])))
    return min(t.start_time for t in tasks if t.start_time), max(t.end_time for t in tasks if t.end_time)


def test_two_releases_at_once_run_one_after_the_other_and_a_verify_meanwhile_is_skipped(plane):
    sandbox, _, _ = plane
    commit_version(sandbox.app_dir, "5.0.0")
    outs = {}
    threads = [threading.Thread(target=lambda k=k: outs.update({k: trigger("release", "--env", ENV, "--wait")}))
               for k in ("a", "b")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120  # a verify while a release holds the environment
    while (held_by := holder(ENV)) is None and time.monotonic() < deadline:
        time.sleep(0.3)
    # Read once: a second read found the lock free once in CI (run50, 2026-12-06), between
    # one release letting go and the other taking it, or one release ending early; the
    # checks below say which, and that the verify was skipped either way.
    assert held_by is not None, "no release took the environment's lock within 120 s"
    skipped_code, skipped, _ = trigger("verify", "--env", ENV, "--wait")
    for t in threads:
        t.join(timeout=600)

    assert skipped_code == 0 and skipped["state"] == "Completed", skipped["message"]
    assert skipped["message"].startswith(f"skipped: {ENV} is being changed by release-{ENV}")
    (a_code, a, _), (b_code, b, _) = outs["a"], outs["b"]
    assert a_code == b_code == 0, [report_of(run["flow_run_id"]) for run in (a, b)]
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
    released_through_the_worker(plane[0])
    code, run, progress = trigger("verify", "--env", ENV, "--wait")
    assert code == 0 and run["state"] == "Completed", (run, progress)
    assert run["url"].endswith(f"/runs/flow-run/{run['flow_run_id']}")
    # Each step as it finishes, with its detail, as `smartrelease verify` prints it.
    assert re.search(r"^verify    PASSED   verify +\d+\.\d+\.\d+ \(\w{12}, built .*  \(\d+ ms\)$", progress, re.M), progress

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


def test_a_verify_triggered_while_a_release_holds_the_environment_records_itself_as_skipped(plane):
    # The lock held here as a release holds it: what a scheduled verify meets mid-release.
    with environment_lock(ENV, me(f"release-{ENV} stand-in")):
        code, run, _ = trigger("verify", "--env", ENV, "--wait")
    assert code == 0 and run["state"] == "Completed", run
    assert run["message"].startswith(f"skipped: {ENV} is being changed by release-{ENV} stand-in"), run["message"]
    assert any(r["result"] == "verify skipped" and r["flow_run_id"] == run["flow_run_id"] for r in read_history(ENV))


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
    _, control, _ = plane
    code, run, _ = trigger("preflight", "--env", SIDE, "--wait")
    assert code == 0, run
    assert run["flow_run_id"] in control.worker(SIDE).log_file.read_text()
    assert run["flow_run_id"] not in control.worker(ENV).log_file.read_text()


def test_a_run_of_one_environments_deployment_refuses_another_environment(plane):
    # The UI's run form lets a person edit the environment; the run refuses it before
    # loading any block, so the sandbox's worker never acts on another environment.
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name("preflight", SIDE))
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"environment": ENV})
    done = follow(run.id, timeout_s=300)
    assert done.state.type.value == "FAILED"
    assert f"this run of deployment preflight/{SIDE} acts on {SIDE!r} only, not {ENV!r}" in done.state.message


def log_in(page, ui: str, *, wrong_first: bool = False) -> None:
    """The UI asks for the server's credentials (its login page) before showing
    anything, turns down wrong ones, and lets the holder of the right ones in."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    seen: list[str] = []  # what the page met, for the failure's message
    page.on("console", lambda m: seen.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("requestfailed", lambda r: seen.append(f"failed {r.url}: {r.failure}"))
    page.on("response", lambda r: seen.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    field = page.get_by_placeholder("admin:pass")
    # Seen twice in CI and once here in fresh-clone runs: the page stayed blank (its body
    # empty) after the load, and after a reload; most likely its first API call failed
    # with net::ERR_NETWORK_CHANGED, which the `chromium` fixture now prevents. A person
    # opens it again; so does this, three loads in all, then says what the page met.
    for _ in range(3):
        page.goto(ui, wait_until="networkidle")
        try:
            field.wait_for()
            break
        except PlaywrightTimeout:
            continue
    else:
        raise AssertionError("the UI did not ask for credentials in three loads: "
                             + page.inner_text("body")[:500] + " | " + "; ".join(seen[-20:]))
    if wrong_first:
        field.fill("smartrelease:guessed")
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Invalid credentials").wait_for()
        field = page.get_by_placeholder("admin:pass")
    field.fill(os.environ["PREFECT_API_AUTH_STRING"])
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Dashboard").first.wait_for()


def test_a_person_releases_and_verifies_from_the_ui_whose_forms_show_the_parameters_and_no_secret(plane, tmp_path, chromium):
    """The Prefect UI in headless Chromium: a custom run of release/<env> with a version
    typed into the form (built from the flow's parameters) runs on the environment's
    worker, and its release report opens from the run's page with the version and every
    step; a quick run of verify/<env> does the same; the environment's block shows no
    secret. Screenshots go to SMARTRELEASE_SCREENSHOTS (docs/ui holds the committed
    ones) or a temporary directory."""
    from playwright.sync_api import sync_playwright

    sandbox, control, _ = plane
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    shots = Path(os.environ.get("SMARTRELEASE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with get_client(sync_client=True) as client:
        release_id = client.read_deployment_by_name(deployment_name("release", ENV)).id
        verify_id = client.read_deployment_by_name(deployment_name("verify", ENV)).id
        block_id = client.read_block_document_by_name(ENV, "smartaccounting-app-environment").id
    secrets = load_environment(ENV).secret_values()
    commit_version(sandbox.app_dir, "4.1.0")
    before = {r.id for r in runs_of(f"release/{ENV}") + runs_of(f"verify/{ENV}")}

    def new_run(deployment: str, page):
        deadline = time.monotonic() + 60
        while not (new := [r for r in runs_of(deployment) if r.id not in before]):
            if time.monotonic() > deadline:
                page.screenshot(path=shots / "no-run-made.png", full_page=True)
                raise AssertionError(f"the UI made no run of {deployment}: {page.inner_text('body')[-800:]}")
            time.sleep(0.5)
        assert len(new) == 1, new
        return follow(new[0].id, timeout_s=300)

    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            log_in(page, ui, wrong_first=True)
            page.goto(f"{ui}/deployments/deployment/{release_id}", wait_until="networkidle")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()
            page.get_by_role("button", name="Submit").wait_for()
            form = page.inner_text("body")
            for field in ("environment", "version (Optional)", "digests (Optional)", "db_strategy (Optional)",
                          "wait (Optional)"):
                assert field in form, form
            values = [box.input_value() for box in page.get_by_role("textbox").all()]
            assert ENV in values, values  # the environment field, filled by the deployment
            page.get_by_role("button", name="str", exact=True).click()  # version: a string, not None
            page.get_by_role("textbox").last.fill("4.1.0")
            page.screenshot(path=shots / "release-run-form.png", full_page=True)
            page.get_by_role("button", name="Submit").click()
            released = new_run(f"release/{ENV}", page)
            assert released.state.type.value == "COMPLETED", report_of(released.id)
            page.goto(f"{ui}/runs/flow-run/{released.id}", wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text(f"Release report for {ENV}").click()
            page.get_by_text(f"release 4.1.0 — {ENV}: passed").wait_for()
            report = page.inner_text("body")
            page.screenshot(path=shots / "release-report.png", full_page=True)

            page.goto(f"{ui}/deployments/deployment/{verify_id}", wait_until="networkidle")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Quick run").click()
            dialog = page.get_by_role("dialog")  # the deployment's parameters, to look at before running
            dialog.get_by_text("environment").wait_for()
            page.screenshot(path=shots / "verify-quick-run.png")
            dialog.get_by_role("button", name="Run", exact=True).click()
            verified = new_run(f"verify/{ENV}", page)
            page.goto(f"{ui}/runs/flow-run/{verified.id}", wait_until="networkidle")
            page.get_by_text("Completed").first.wait_for()
            page.screenshot(path=shots / "verify-run.png", full_page=True)

            page.goto(f"{ui}/blocks/block/{block_id}", wait_until="networkidle")
            page.get_by_text("Jwt Secret").first.wait_for()
            page.screenshot(path=shots / "environment-block.png", full_page=True)
            shown = page.content()
        finally:
            browser.close()

    assert (released.parameters["environment"], released.parameters["version"]) == (ENV, "4.1.0"), released.parameters
    missing = [step for step in release_steps(load_environment(ENV).target) if step not in report]
    assert not missing, (missing, report)
    assert verified.state.type.value == "COMPLETED", verified.state
    for run in (released, verified):
        assert str(run.id) in control.worker(ENV).log_file.read_text()
    rows = read_history(ENV)
    assert any(r.get("flow_run_id") == str(released.id) and r["result"] == "released" and r["version"] == "4.1.0"
               for r in rows)
    assert any(r.get("flow_run_id") == str(verified.id) and r["result"] == "verified" for r in rows)
    assert_no_secret({"the block's page": shown, "the release report's page": report}, secrets)


def test_a_release_approved_in_the_ui_form_goes_on_on_its_worker_and_a_failed_verify_is_notified(plane, tmp_path, chromium):
    """The approval form in the Prefect UI, in headless Chromium: a release triggered as
    CI does pauses on the worker; its run page's Resume opens the form with the plan;
    approving there resumes it on the worker. A verify run that fails is notified."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from tests.test_approval_e2e import Listener

    sandbox, control, _ = plane
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    shots = Path(os.environ.get("SMARTRELEASE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    listener = Listener()
    CustomWebhookNotificationBlock(name="alerts", url=listener.url, json_data={"subject": "{{subject}}",
                                                                              "body": "{{body}}"}).save(
        "smartrelease-e2e-plane", overwrite=True)
    sandbox.set_env("RELEASE_APPROVAL", "required")
    sandbox.set_env("RELEASE_NOTIFY_BLOCK", "custom-webhook/smartrelease-e2e-plane")
    try:
        commit_version(sandbox.app_dir, "4.2.0")
        code, started, _ = trigger("release", "--env", ENV)
        assert code == 0, started
        waiting = listener.wait_for("approval waiting", timeout_s=120)
        assert f"/runs/flow-run/{started['flow_run_id']}" in waiting["body"]
        with sync_playwright() as p:
            browser = chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            try:
                log_in(page, ui)
                page.goto(f"{ui}/runs/flow-run/{started['flow_run_id']}", wait_until="networkidle")
                resume = page.get_by_role("button", name="Resume").first
                try:
                    resume.click(timeout=20_000)
                except PlaywrightTimeout:
                    # Seen once in eight full runs: the page of a run the server held paused
                    # showed no Resume button; a person reloads it. The page's text, if not.
                    page.reload(wait_until="networkidle")
                    try:
                        resume.click(timeout=30_000)
                    except PlaywrightTimeout:
                        raise AssertionError("no Resume button on the paused run's page, reloaded once: "
                                             + page.inner_text("body")[:1500]) from None
                form = page.get_by_role("dialog")
                form.get_by_text(f"Approve the release of 4.2.0 to {ENV}?").wait_for()
                shown = form.inner_text()
                form.get_by_role("switch").click()
                reason, approver = form.get_by_role("textbox").all()
                reason.fill("CAB-77: go")
                approver.fill("carol")
                page.screenshot(path=shots / "approval-form.png", full_page=True)
                form.get_by_role("button", name="Submit").click()
                page.get_by_text("Flow run resumed").first.wait_for()
            finally:
                browser.close()
        told = []  # what `trigger --wait` prints: the waiting step too, with the run's link
        run = follow(started["flow_run_id"], timeout_s=300, on_step=lambda flow, step: told.append(step))
        assert run.state.type.value == "COMPLETED", report_of(run.id)
        waited = [step for step in told if step.name == "approval" and step.status.value == "waiting"]
        assert len(waited) == 1 and started["url"] in waited[0].detail, told
        for line in ("version", "4.2.0", "migrations to run", "backup", "rollback plan", "requested by"):
            assert line in shown, shown
        assert str(run.id) in control.worker(ENV).log_file.read_text()  # the worker's run, resumed there
        row = next(r for r in read_history(ENV) if r.get("flow_run_id") == str(run.id))
        assert row["result"] == "released" and row["approval"].startswith("approved by carol: CAB-77: go at "), row

        code, failed, _ = trigger("verify", "--env", ENV, "-p", "expect_version=0.0.1", "--wait")
        assert code == 1 and failed["state"] == "Failed"
        message = listener.wait_for("verify failed")
        assert message["subject"] == f"[{ENV}] verify failed: 0.0.1", message
        assert message["body"].splitlines()[1].startswith("verify: "), message
        assert_no_secret({"notifications": json.dumps([m["json"] for m in listener.received])}, SENTINELS)
    finally:
        sandbox.set_env("RELEASE_APPROVAL", "none")
        sandbox.set_env("RELEASE_NOTIFY_BLOCK", None)
        listener.server.shutdown()


def test_a_worker_stopped_during_the_launch_leaves_what_the_next_rollback_recovers(plane):
    """The environment's worker is stopped (SIGTERM to it and to every process it
    started, as `systemctl stop` does) the moment the release's new backend container
    exists: the release's process dies mid-cutover. The worker is started again and a
    rollback triggered through it: it gets the lock (at once, or once a lock the dead
    run held has lapsed), then puts the last release back, verified, with the database
    as it was and one container per service."""
    import docker

    from smartrelease.sandbox.plane import start_worker

    sandbox, control, _ = plane
    released_through_the_worker(sandbox)
    before_version, before_db = sandbox.env_running_version(), sandbox.fingerprint()
    commit_version(sandbox.app_dir, "4.6.0")
    code, run, _ = trigger("release", "--env", ENV)
    assert code == 0, run
    client, project = docker.from_env(), sandbox.settings.project
    deadline = time.monotonic() + 300
    # ignore_removed: a container the release removes between Docker's list and its
    # inspect is not an error of the test's.
    while not client.containers.list(all=True, ignore_removed=True, filters={"label": [
            f"com.docker.compose.project={project}", "org.opencontainers.image.version=4.6.0"]}):
        assert time.monotonic() < deadline, "the release never started a new container: " + report_of(run["flow_run_id"])
        time.sleep(0.05)
    assert control.worker(ENV).stop()  # SIGTERM to the worker and its flow run's process
    left = sorted(f"{c.labels.get('com.docker.compose.service')} {c.labels.get('org.opencontainers.image.version')} "
                  f"{c.status}" for c in client.containers.list(all=True, ignore_removed=True, filters={
                      "label": f"com.docker.compose.project={project}"}))
    start_worker(control, ENV)
    code, rolled, _ = trigger("rollback", "--env", ENV, "--wait", "--timeout", "600")
    assert code == 0, report_of(rolled["flow_run_id"])
    assert sandbox.env_running_version() == before_version
    assert sandbox.fingerprint() == before_db
    containers = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    services = [c.labels.get("com.docker.compose.service") for c in containers]
    assert sorted(services) == sorted(set(services)) and all(c.status == "running" for c in containers), \
        [(c.name, c.status) for c in containers]
    # The release never stays Running. The SIGTERM lands either in Prefect's handler,
    # which reports the crash on the way out (the lock let go as it unwinds), or where
    # the process just dies, holding the lock: then the rollback that finds it ends it.
    from prefect.artifacts import Artifact

    with get_client(sync_client=True) as prefect:
        killed = prefect.read_flow_run(run["flow_run_id"]).state
    lock_step = Artifact.get(f"rollback-{ENV}").data
    assert killed.is_crashed(), killed
    if "ended while it held" in killed.message:
        assert "died holding the lock" in lock_step  # the rollback's lock step says so
    else:
        assert killed.message == "Execution was aborted by a termination signal.", killed
        assert "died holding the lock" not in lock_step
    print(json.dumps({"left_by_the_stopped_release": left, "killed_run_state": f"{killed.type.value}: {killed.message}",
                      "rollback": rolled["message"]}))


def test_a_killed_releases_lease_runs_out_and_the_next_holder_gets_the_lock(plane):
    # Last in the module: the module's other tests ran while the lease ran out.
    _, _, drill = plane
    assert drill.held_after_kill is not None and drill.held_after_kill.what.startswith(f"release-{DRILL} (flow run ")
    drill.thread.join(timeout=max(1.0, drill.killed_at + 200 - time.monotonic()))
    assert drill.got_it_at is not None, "the next holder never got the lock"
    waited = drill.got_it_at - drill.killed_at
    # The lease is 60 s (the server's minimum) from when it was taken, just before the kill.
    assert 50 <= waited <= 120, waited
    print(json.dumps({"lease_expiry_wait_s": round(waited, 1)}))
