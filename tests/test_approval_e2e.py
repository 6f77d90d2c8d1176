"""The approval gate and the notifications, end to end on the shared sandbox: the
release really pauses on the Prefect server, is answered over the resume endpoint
(as the UI's form and `smartrelease approve` do), and each notification is a real
HTTP request from Prefect's Custom Webhook block to a listener in this process."""

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterName, FlowRunFilterState,
                                            FlowRunFilterStateType)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

from smartrelease.deployments.approve import answer
from smartrelease.record.history import read_history
from smartrelease.flows.release import release
from smartrelease.flows.rollback import rollback
from smartrelease.flows.requester import user
from smartrelease import cli
from smartrelease.errors import ConfigError
from smartrelease.report import Report, Status
from smartrelease.adapters.postgres import connect
from tests.conftest import SENTINELS, SHARED_ENV, assert_no_secret, by_name, free_port, stored

pytestmark = pytest.mark.e2e
ENV = SHARED_ENV
BLOCK = "smartrelease-e2e-listener"
WEBHOOK_TOKEN = "SENTINEL-webhook-token-4f1c"  # the block's own secret: never in a message


class Listener:
    """A webhook receiver: keeps every JSON body posted to it and, for one linking a
    flow run, that run's state at that moment (the sender waits for the answer)."""

    def __init__(self):
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                linked = re.search(r"/runs/flow-run/([0-9a-f-]{36})", json.dumps(body))
                state = None
                if linked:  # plain HTTP, bounded: the sending flow may run in this process
                    run = httpx.get(f"{PREFECT_API_URL.value()}/flow_runs/{linked.group(1)}", timeout=3,
                                    auth=tuple(str(PREFECT_API_AUTH_STRING.value()).split(":", 1)))
                    state = run.json()["state"]["type"]
                received.append({"json": body, "token": self.headers.get("X-Token"), "run_state": state})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, event: str) -> list[dict]:
        return [m["json"] for m in self.received if f"] {event}" in m["json"]["subject"]]

    def run_state_when(self, event: str) -> str | None:
        """The linked run's state when the last `event` notification was sent."""
        return [m["run_state"] for m in self.received if f"] {event}" in m["json"]["subject"]][-1]

    def wait_for(self, event: str, timeout_s: float = 20) -> dict:
        deadline = time.monotonic() + timeout_s
        while not self.events(event):
            assert time.monotonic() < deadline, f"no {event!r} notification; got {self.received}"
            time.sleep(0.1)
        return self.events(event)[-1]


def save_block(url: str) -> None:
    CustomWebhookNotificationBlock(
        name="release alerts", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"},
        headers={"X-Token": "{{token}}"}, secrets={"token": WEBHOOK_TOKEN}, timeout=5,
    ).save(BLOCK, overwrite=True)


@pytest.fixture(scope="module")
def listener():
    found = Listener()
    save_block(found.url)
    yield found
    found.server.shutdown()


@pytest.fixture(scope="module")
def sandbox(shared_sandbox, listener):
    shared_sandbox.set_env("RELEASE_APPROVAL", "required")
    shared_sandbox.set_env("RELEASE_NOTIFY_BLOCK", f"custom-webhook/{BLOCK}")
    try:
        yield shared_sandbox
    finally:
        for key in ("RELEASE_APPROVAL_SEPARATE", "RELEASE_APPROVAL_TIMEOUT_MIN", "RELEASE_NOTIFY_BLOCK"):
            shared_sandbox.set_env(key, None)
        shared_sandbox.set_env("RELEASE_APPROVAL", "none")


@contextmanager
def releasing(sandbox, version: str, **changes):
    """Start the release of `version` in a thread (it pauses); yield its future.
    When the test fails meanwhile, the release is cancelled, as the UI's Cancel does:
    left paused, it held the environment's lock for its hour of approval timeout, and
    the test waited that hour for its thread (seen in CI once, 73 minutes in all)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(sandbox.release, version, **changes)
        try:
            yield future
        except BaseException:
            if not future.done():
                cancel_releases("the test failed while it waited")
            raise


def cancel_releases(why: str) -> None:
    """Cancel the release runs of the environment that have not ended."""
    from prefect.client.schemas.objects import TERMINAL_STATES
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"release-{ENV}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=list(TERMINAL_STATES))))):
            client.set_flow_run_state(run.id, Cancelling(message=why), force=True)


def paused_run(after_key: str | None = None, timeout_s: float = 120):
    """The e2e release run waiting for its approval (a newer pause than `after_key`)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"release-{ENV}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            runs = [r for r in runs if r.state.state_details.pause_key != after_key]
            if runs:
                return runs[0]
            time.sleep(0.3)
    raise AssertionError("no release paused for approval")


def untouched(sandbox) -> tuple:
    """What a release that never got past its approval must leave as it was: the
    containers, the database, the backups."""
    return sandbox.containers(), sandbox.fingerprint(), sorted(p.name for p in Path(sandbox.env().app.backup_dir).iterdir())


def finished(future) -> tuple[object, Report]:
    state, report, _ = future.result(timeout=300)
    return state, report


def test_a_rejected_release_changes_nothing_and_a_self_approval_is_refused(sandbox, listener):
    sandbox.set_env("RELEASE_APPROVAL_SEPARATE", "true")
    before = untouched(sandbox)
    with releasing(sandbox, "3.0.0") as future:
        run = paused_run()
        waiting = listener.wait_for("approval waiting")
        assert waiting["subject"].startswith(f"[{ENV}] approval waiting: ") and "→ 3.0.0" in waiting["subject"]
        assert f"/runs/flow-run/{run.id}" in waiting["body"]
        # Sent once the run is paused: the link opens its page with the Resume button
        # (sent before, the UI showed a running release, and no button, for 30 s).
        assert listener.run_state_when("approval waiting") == "PAUSED"
        # The form the UI shows: the plan, in the description saved with the pause.
        with get_client(sync_client=True) as client:
            description = json.loads(client.read_flow_run_input(
                run.id, f"paused-{run.state.state_details.pause_key}-description"))
        assert "## Approve the release of 3.0.0 to e2e?" in description and "Nothing has been changed yet" in description
        assert f"| requested by | {user()} |" in description and "[rollback-plan-e2e](" in description

        # The CLI refuses the requester before sending anything.
        with pytest.raises(ConfigError, match=f"approve: {user()} requested release-{ENV}, and {ENV} needs a separate"):
            answer(run.id, True, "my own change", user())
        # An answer the form does not accept is refused by the server; the run still waits.
        assert cli.main(["approve", str(run.id), "--reason", "x" * 501, "--as", "alice"]) == cli.EXIT_CONFIG
        assert paused_run().id == run.id
        # Sent as the UI would (no CLI check): the flow refuses it and waits again.
        with get_client(sync_client=True) as client:
            client.resume_flow_run(run.id, run_input={"approve": True, "reason": "mine", "approver": user()})
        again = paused_run(after_key=run.state.state_details.pause_key)
        assert again.id == run.id

        assert "rejected" in answer(run.id, False, "not during the month-end close", "alice")
        state, report = finished(future)
    assert state.is_cancelled(), report.text()
    assert state.message == "release 3.0.0 rejected by alice: not during the month-end close; nothing was changed"
    step = by_name(report)["approval"]
    assert step.status == Status.FAILED and step.detail == "rejected by alice: not during the month-end close; nothing was changed"
    assert report.facts.approval.refused == [f"{user()}: requested this release; RELEASE_APPROVAL_SEPARATE needs someone else"]
    assert all(by_name(report)[s].status == Status.SKIPPED for s in ("backup", "launch", "verify"))
    assert untouched(sandbox) == before
    assert read_history(ENV)[-1]["result"] == "rejected by alice"
    rejected = listener.wait_for("release rejected")
    assert "rejected by alice: not during the month-end close" in rejected["body"]
    sandbox.set_env("RELEASE_APPROVAL_SEPARATE", "false")


def test_an_unanswered_approval_times_out_and_a_dead_listener_does_not_fail_the_release(sandbox, listener):
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    save_block(dead)
    sandbox.set_env("RELEASE_APPROVAL_TIMEOUT_MIN", "0.05")  # 3 s
    before = untouched(sandbox)
    try:
        state, report, _ = sandbox.release("3.1.0")
    finally:
        save_block(listener.url)
        sandbox.set_env("RELEASE_APPROVAL_TIMEOUT_MIN", "60")
    assert state.is_failed() and state.message == "release 3.1.0: approval timed out; nothing was changed"
    assert by_name(report)["approval"].detail == "approval timed out: nobody answered within 0.05 min; nothing was changed"
    assert report.facts.approval.decision == "timed out" and not report.facts.approval.approver
    assert untouched(sandbox) == before
    assert read_history(ENV)[-1]["result"] == "approval timed out"
    # Both notifications (approval waiting, approval timed out) failed, and said so in
    # the run's logs (stored() flushes them: they are shipped in the background, and
    # the last one was not on the server yet when read at once).
    logs = stored(state.state_details.flow_run_id)["logs"].splitlines()
    undelivered = [line for line in logs if "not delivered" in line]
    assert len(undelivered) == 2 and all("ConnectError" in m for m in undelivered), undelivered


def test_a_release_cancelled_while_it_waits_ends_cancelled_having_changed_nothing(sandbox):
    from prefect.states import Cancelling

    before = untouched(sandbox)
    with releasing(sandbox, "3.5.0") as future:
        run = paused_run()
        with get_client(sync_client=True) as client:  # the UI's Cancel button
            client.set_flow_run_state(run.id, Cancelling(), force=True)
        state, report = finished(future)
    assert state.is_cancelled(), report.text()
    assert by_name(report)["approval"].detail == "cancelled while waiting for approval (Cancelling); nothing was changed"
    assert untouched(sandbox) == before and read_history(ENV)[-1]["result"] == "cancelled at approval"


def test_a_plan_that_changed_while_waiting_stops_the_release_after_approval(sandbox):
    before = untouched(sandbox)
    with releasing(sandbox, "3.2.0") as future:
        run = paused_run()
        with connect(sandbox.env(), "test") as conn:  # someone migrates by hand meanwhile
            conn.execute('INSERT INTO "SequelizeMeta" (name) VALUES (%s)', ("20990101000000-by-hand.js",))
        try:
            answer(run.id, True, "looks fine", "alice")
            state, report = finished(future)
        finally:
            with connect(sandbox.env(), "test") as conn:
                conn.execute('DELETE FROM "SequelizeMeta" WHERE name = %s', ("20990101000000-by-hand.js",))
    assert state.is_failed()
    detail = by_name(report)["approval"].detail
    assert detail.startswith("approved by alice: looks fine, but the environment changed while waiting: the migrations "
                             "table changed: +20990101000000-by-hand.js. Nothing was changed"), detail
    assert untouched(sandbox) == before


def test_an_approved_release_goes_ahead_with_the_lock_held_while_it_waits_and_the_approver_on_record(sandbox, listener):
    with releasing(sandbox, "3.3.0") as future:
        run = paused_run()
        other = release(environment=ENV, version="3.3.1", wait=False, return_state=True)
        assert other.is_failed() and "release-e2e" in str(other.result(raise_on_failure=False)), other
        assert cli.main(["approve", str(run.id), "--reason", "CAB-1234", "--as", "bob"]) == cli.EXIT_OK
        state, report = finished(future)
    assert state.is_completed(), report.text()
    assert [r.name for r in report.results][4:7] == ["rollback-plan", "approval", "backup"]
    assert by_name(report)["approval"].detail == "approved by bob: CAB-1234; plan unchanged"
    assert "| approval | approved by bob: CAB-1234 at " in report.markdown()
    row = read_history(ENV)[-1]
    assert row["result"] == "released" and row["approval"].startswith("approved by bob: CAB-1234 at ")
    texts = stored(state.state_details.flow_run_id)
    texts["report"] = report.markdown()
    texts["notifications"] = json.dumps([m["json"] for m in listener.received])
    assert_no_secret(texts, [*SENTINELS, WEBHOOK_TOKEN])
    assert all(m["token"] == WEBHOOK_TOKEN for m in listener.received)  # the block's secret went where it belongs


def test_a_failed_release_that_rolled_back_is_notified_with_its_reason_and_time_to_recover(sandbox, listener):
    sandbox.set_env("RELEASE_APPROVAL", "none")
    try:
        state, report, _ = sandbox.release("3.4.0", faults=["crash-on-start"])
    finally:
        sandbox.set_env("RELEASE_APPROVAL", "required")
    assert state.is_failed() and report.facts.rollback.recovered, report.text()
    message = listener.wait_for("release failed, rolled back")
    previous = report.facts.previous_version
    assert message["subject"] == f"[{ENV}] release failed, rolled back: {previous} → 3.4.0"
    lines = message["body"].splitlines()
    assert lines[1].startswith("launch: backend container") and "crash-on-start" in lines[1]
    assert lines[2].startswith(f"Rolled back to {previous} and verified in ") and lines[2].endswith(" s.")
    assert lines[3] == f"Run: {message['body'].split('Run: ')[1]}" and "/runs/flow-run/" in lines[3]
    assert_no_secret({"notifications": json.dumps([m["json"] for m in listener.received])}, [*SENTINELS, WEBHOOK_TOKEN])


def test_a_rollback_that_fails_is_notified_with_its_reason_and_changes_nothing(sandbox, listener):
    before = untouched(sandbox)
    state = rollback(environment=ENV, to_version="0.0.9", return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_failed() and by_name(report)["rollback-target"].status == Status.FAILED, report
    message = listener.wait_for("rollback failed")
    assert message["subject"] == f"[{ENV}] rollback failed: — → 0.0.9"
    assert message["body"].splitlines()[1].startswith("rollback-target: 0.0.9 is not among the releases that can "
                                                      "be gone back to"), message
    assert untouched(sandbox) == before
