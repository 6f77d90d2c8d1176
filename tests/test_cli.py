"""`smartrelease` as a user runs it: a real process, its exit code and its output."""

import json
import os
import subprocess
import sys

import pytest

from prefect.settings import PREFECT_API_URL

from smartrelease.flows.preflight import CHECKS
from tests.conftest import TERMINAL_EVENTS, free_port, stored


def smartrelease(*args, env_extra=None) -> subprocess.CompletedProcess:
    # Point the process at the test harness's server instead of starting its own.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "smartrelease.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_version_prints_the_version_file():
    out = smartrelease("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"smartrelease {open('VERSION').read().strip()}"


@pytest.mark.parametrize("command", ["preflight", "adopt"])
def test_missing_env_file_is_exit_2_with_one_line(tmp_path, command):
    out = smartrelease(command, "--env-file", str(tmp_path / ".env.absent"), "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip() == f"smartrelease: env file not found: {tmp_path / '.env.absent'}"


def test_bad_setting_is_exit_2_and_saves_nothing(tmp_path):
    path = tmp_path / ".env.typo"
    path.write_text("RELEASE_TLS_WARN_DAYS=fortnight\n")
    out = smartrelease("preflight", "--env-file", str(path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "RELEASE_TLS_WARN_DAYS" in out.stderr


def test_usage_error_is_exit_2():
    assert smartrelease("preflight").returncode == 2


def test_json_contract_on_a_failing_environment(write_env, https_server):
    path = write_env(name="cli", public_url=https_server(status=503))
    out = smartrelease("preflight", "--env-file", str(path), "--json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)  # standard output is exactly one JSON object
    assert set(report) == {"ok", "checks"} and report["ok"] is False
    assert [c["name"] for c in report["checks"]] == list(CHECKS)
    for check in report["checks"]:
        assert set(check) == {"name", "status", "detail", "duration_ms"}
        assert check["status"] in ("passed", "warning", "failed")
        assert isinstance(check["duration_ms"], (int, float)) and check["duration_ms"] >= 0
    tls = next(c for c in report["checks"] if c["name"] == "tls")
    assert tls["status"] == "failed" and "answered 503" in tls["detail"]


def test_a_commands_run_sends_no_prefect_heartbeat_which_cost_it_up_to_a_second(write_env, https_server):
    """Issue 33: the end of a flow run joins Prefect's heartbeat thread, which sleeps in
    steps of 1 s. A command's run goes without it; its other events still arrive."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    out = smartrelease("preflight", "--env-file", str(write_env(name="noheartbeat", public_url=https_server())))
    assert out.returncode in (0, 1), out.stderr
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["preflight-noheartbeat"])))
    names = stored(run.id)["event_names"]  # waits for the run's terminal event
    assert TERMINAL_EVENTS & set(names), names
    assert "prefect.flow-run.heartbeat" not in names, names


def test_a_command_ends_without_pythons_last_collections_and_its_run_logs_are_all_on_the_server(
        write_env, https_server):
    """Issue 33: the command freezes Prefect's objects before the interpreter's teardown
    (cli.entry), which spent 0.3 s collecting them. Its exit handlers still send every
    queued log line: the last one is on the server as the process ends, read once."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId

    out = smartrelease("preflight", "--env-file", str(write_env(name="quickexit", public_url=https_server())))
    assert out.returncode in (0, 1), out.stderr
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["preflight-quickexit"])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    messages = [log.message for log in logs]
    assert any(m.startswith("Finished in state") for m in messages), messages
    assert all(any(m.startswith(f"{check} ") for m in messages) for check in CHECKS), messages


def test_release_with_a_bad_version_is_exit_2_and_touches_nothing(write_env):
    from smartrelease.blocks import AppEnvironment

    path = write_env(name="badversion")
    out = smartrelease("release", "--env-file", str(path), "--version", "1.0")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "smartrelease: --version '1.0' is not SemVer (MAJOR.MINOR.PATCH[-prerelease], ASCII digits)"
    with pytest.raises(ValueError):  # not even the blocks were saved
        AppEnvironment.load("badversion")


def test_verify_with_nothing_released_and_no_expected_version_is_exit_2(write_env):
    out = smartrelease("verify", "--env-file", str(write_env(name="neverreleased")))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "smartrelease: no expected version for neverreleased: pass --expect-version, or release first"


def test_release_json_contract_when_preflight_fails(write_env, https_server):
    # Nothing of this environment runs and it has no history (a first release), so an
    # unanswered health check would only be a warning; an expired certificate is not.
    path = write_env(name="clirelease", public_url=https_server(days=-1))
    out = smartrelease("release", "--env-file", str(path), "--json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert {"ok", "version", "previous_version", "digests", "steps"} <= set(report)
    assert report["ok"] is False and report["version"] == "1.2.3" and report["previous_version"] is None
    assert report["digests"] == {}
    assert [(s["name"], s["status"]) for s in report["steps"]][:3] == [
        ("lock", "passed"), ("preflight", "failed"), ("build-pin", "skipped")]
    assert all(s["status"] == "skipped" for s in report["steps"][2:])
    assert "tls: certificate of localhost has expired" in report["steps"][1]["detail"]
    for step in report["steps"]:
        assert set(step) == {"name", "status", "detail", "duration_ms"}
    # Each step was shown as it finished, the subflow's checks too, on standard error
    # (standard output holds the JSON alone, parsed above).
    progress = [line.split() for line in out.stderr.splitlines() if line.startswith(("release ", "preflight "))]
    assert ["preflight", "FAILED", "tls", "certificate", "of", "localhost", "has", "expired"] in [p[:8] for p in progress]
    assert progress[-1][:3] == ["release", "FAILED", "preflight"]
    assert ["preflight", "PASSED", "environment"] in [p[:3] for p in progress]


def test_rollback_with_nothing_released_is_exit_2(write_env):
    path = write_env("nohistory")
    out = smartrelease("rollback", "--env-file", str(path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "smartrelease: no release of nohistory in the history: nothing to roll back to"


def test_rollback_to_a_version_never_released_is_exit_2(write_env):
    from prefect.artifacts import create_table_artifact

    from smartrelease.record.history import history_key

    path = write_env("onerelease")
    create_table_artifact(key=history_key("onerelease"), table=[{"version": "1.0.0", "result": "released",
                                                                "backend": "r/b@sha256:" + "1" * 64, "frontend": "r/f@sha256:" + "2" * 64}])
    out = smartrelease("rollback", "--env-file", str(path), "--to", "0.9.0")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "--to 0.9.0: not a release of onerelease" in out.stderr and "(1.0.0)" in out.stderr
    bad = smartrelease("rollback", "--env-file", str(path), "--db-strategy", "drop")
    assert bad.returncode == 2 and "invalid choice: 'drop'" in bad.stderr


def test_guard_flips_allow_prod_migrations_in_the_block(write_env):
    from smartrelease.blocks import AppEnvironment
    from smartrelease.record.lock import import_environment

    import_environment(write_env("guarded", ALLOW_PROD_MIGRATIONS="true"), "guarded")
    off = smartrelease("guard", "off", "--name", "guarded")
    assert off.returncode == 0, off.stderr
    assert "ALLOW_PROD_MIGRATIONS=false saved in block 'guarded' (was true)" in off.stdout
    assert AppEnvironment.load("guarded").allow_prod_migrations == "false"
    assert smartrelease("guard", "on", "--name", "guarded").returncode == 0
    assert AppEnvironment.load("guarded").allow_prod_migrations == "true"
    missing = smartrelease("guard", "off", "--name", "nosuchenv")
    assert missing.returncode == 2 and "no blocks named 'nosuchenv'" in missing.stderr


def test_promote_refuses_force_without_a_reason_and_a_non_dev_tag(write_env):
    path = str(write_env("promoter"))
    force = smartrelease("promote", "--env-file", path, "--from", "dev-1a2b3c4", "--force")
    assert force.returncode == 2 and "--force and --reason go together" in force.stderr
    semver = smartrelease("promote", "--env-file", path, "--from", "1.0.0")
    assert semver.returncode == 2 and "expected a dev tag, dev-<short git SHA>" in semver.stderr


def test_release_from_a_tag_the_registry_lacks_is_exit_2(write_env, tmp_path):
    from smartrelease.sandbox.registry import Registry

    registry = Registry(tmp_path / "registry", f"127.0.0.1:{free_port()}")
    registry.start()
    try:
        path = write_env("fromtag", RELEASE_REGISTRY=registry.addr, RELEASE_BACKEND_IMAGE="app/backend",
                         RELEASE_FRONTEND_IMAGE="app/frontend")
        out = smartrelease("release", "--env-file", str(path), "--from", "dev-0000000")
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.strip() == (f"smartrelease: --from dev-0000000: app/backend:dev-0000000 does not exist in "
                                      f"{registry.addr}: build it first (`smartrelease build --env-file .env.dev`)")
    finally:
        registry.stop()


def test_sandbox_up_has_an_option_for_every_choice_the_sandbox_offers():
    import inspect

    from smartrelease.sandbox import manager
    from smartrelease.cli import _parser

    choices = set(inspect.signature(manager.up).parameters) - {"s"}
    assert choices <= set(vars(_parser().parse_args(["sandbox", "up"])))
    assert _parser().parse_args(["sandbox", "up", "--server", "--dev"]).server


def test_a_release_that_needs_an_approval_is_refused_without_wait_approval_and_touches_nothing(write_env):
    from smartrelease.blocks import AppEnvironment

    path = write_env(name="needsapproval", RELEASE_APPROVAL=None)  # unset, and production: required
    out = smartrelease("release", "--env-file", str(path), "--version", "1.0.0")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == ("smartrelease: needsapproval needs an approval for each release (RELEASE_APPROVAL "
                                  "unset, and a production environment): pass --wait-approval to wait here for it, "
                                  "or trigger the release deployment")
    with pytest.raises(ValueError):  # not even the blocks were saved
        AppEnvironment.load("needsapproval")


@pytest.mark.parametrize("key, value, why", [
    ("RELEASE_APPROVAL", "maybe", "RELEASE_APPROVAL"),
    ("RELEASE_APPROVAL_TIMEOUT_MIN", "0", "RELEASE_APPROVAL_TIMEOUT_MIN"),
    ("RELEASE_NOTIFY_BLOCK", "release-alerts", "must be <block type slug>/<block name>"),
])
def test_bad_approval_and_notification_settings_are_one_line_exit_2(write_env, key, value, why):
    out = smartrelease("preflight", "--env-file", str(write_env(name="badapproval", **{key: value})))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and why in out.stderr, out.stderr


def test_approving_a_run_that_is_not_paused_or_does_not_exist_is_one_line_exit_2():
    out = smartrelease("approve", "0b6e5f4a-1c2d-4e3f-8a9b-0c1d2e3f4a5b", "--reason", "ok")
    assert out.returncode == 2
    assert out.stderr.strip() == "smartrelease: approve: no flow run 0b6e5f4a-1c2d-4e3f-8a9b-0c1d2e3f4a5b on this Prefect server"


def test_importing_an_unchanged_env_file_saves_nothing_and_a_changed_one_saves_the_change(write_env):
    from prefect.client.orchestration import get_client

    from smartrelease.blocks import ReleaseTarget
    from smartrelease.record.lock import import_environment

    def stored(name: str):
        with get_client(sync_client=True) as client:
            return {slug: client.read_block_document_by_name(name, slug).updated
                    for slug in ("smartaccounting-app-environment", "smartaccounting-release-target")}

    path = write_env("resaved")
    import_environment(path, "resaved")
    first = stored("resaved")
    import_environment(path, "resaved")
    assert stored("resaved") == first  # nothing was written
    path.write_text(path.read_text() + "RELEASE_READY_TIMEOUT_S=77\n")
    import_environment(path, "resaved")
    now = stored("resaved")
    assert now["smartaccounting-release-target"] > first["smartaccounting-release-target"]
    assert now["smartaccounting-app-environment"] == first["smartaccounting-app-environment"]
    assert ReleaseTarget.load("resaved").ready_timeout_s == 77


_QUEUED_EVENTS_THEN_A_USAGE_ERROR = """
import sys
from prefect.events import emit_event
from smartrelease.cli import main
for i in range(3000):  # enough that the events worker is still sending at exit
    emit_event(event="smartrelease.test.queued", resource={"prefect.resource.id": f"smartrelease.test.{i}"})
if sys.argv[1] == "plain-exit":
    sys.exit(2)
sys.exit(main(["no-such-command"]))
"""


def test_an_error_stays_one_line_while_prefect_sends_queued_events_at_exit():
    """Seen in CI: `trigger`'s one-line refusal followed by Prefect's "Still processing
    items: 2 items remaining..." (its events worker draining at exit)."""
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

    def run(mode):
        return subprocess.run([sys.executable, "-c", _QUEUED_EVENTS_THEN_A_USAGE_ERROR, mode],
                              capture_output=True, text=True, env=env, timeout=300)

    plain = run("plain-exit")  # the same queue without the CLI's main: the notice is there
    assert "Still processing items" in plain.stderr, plain.stderr
    out = run("cli")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "no-such-command" in out.stderr, out.stderr
