"""The control plane without the sandbox: the deployments file, what `apply` makes on
the real server, the lock against a real server, and trigger's checks of bad input."""

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import prefect.context
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import temporary_settings

from smartrelease.record.lock import (HEARTBEAT_S, LEASE_S, UNNAMED, Locked, environment_lock, held, holder,
                                      import_environment, limit_name, me)
from smartrelease.deployments import server
from smartrelease.deployments.apply import apply
from smartrelease.deployments.catalog import FLOW_NAMES, PRODUCTION_ENVIRONMENTS, pool_name, prefect_yaml
from smartrelease.deployments.trigger import check_parameters, parse_parameters
from smartrelease.record.history import read_history
from smartrelease.errors import ConfigError
from tests.conftest import free_port
from tests.test_cli import smartrelease

REPO = Path(__file__).resolve().parent.parent


def test_the_committed_prefect_yaml_is_the_catalogs():
    committed = (REPO / "deployments" / "prefect.yaml").read_text()
    assert committed == prefect_yaml(PRODUCTION_ENVIRONMENTS), "run `smartrelease deployments yaml --env prod --env dev`"
    entries = yaml.safe_load(committed)["deployments"]
    assert {(e["entrypoint"].rsplit(":", 1)[1], e["name"]) for e in entries} == {
        (f, env) for f in FLOW_NAMES for env in PRODUCTION_ENVIRONMENTS}
    for e in entries:
        assert e["parameters"] == {"environment": e["name"]}
        assert e["work_pool"]["name"] == f"smartrelease-{e['name']}"


def test_apply_makes_the_lock_the_pool_and_the_deployments(write_env):
    import_environment(write_env("applied"), "applied")
    with pytest.raises(ConfigError, match="no blocks named 'never-imported'"):
        apply(["applied", "never-imported"])
    with get_client(sync_client=True) as client:  # refused whole: not even the first one's pool
        with pytest.raises(ObjectNotFound):
            client.read_work_pool(pool_name("applied"))
    apply(["applied"])
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool_name("applied")).type == "process"
        assert client.read_global_concurrency_limit_by_name(limit_name("applied")).limit == 1
        for flow in FLOW_NAMES:
            deployment = client.read_deployment_by_name(f"{flow}/applied")
            assert deployment.work_pool_name == "smartrelease-applied"
            assert deployment.parameters == {"environment": "applied"}
            properties = deployment.parameter_openapi_schema["properties"]
            assert not {"password", "secret", "database_url"} & set(properties)
            assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
                "directory": str(REPO)}}]
        release = client.read_deployment_by_name("release/applied").parameter_openapi_schema
        assert set(release["properties"]) == {"environment", "version", "digests", "db_strategy", "wait", "stop_first"}
        assert release["required"] == ["environment"]
        # The UI offers the database strategies as a choice, not free text.
        assert release["properties"]["db_strategy"]["enum"] == ["undo", "restore", "none"]
        schedules = client.read_deployment_by_name("verify/applied").schedules
        assert len(schedules) == 1 and schedules[0].schedule.interval.total_seconds() == 900
        assert schedules[0].schedule.anchor_date.year == 2026  # applying again does not move it
        drills = client.read_deployment_by_name("drill/applied").schedules
        assert len(drills) == 1 and drills[0].schedule.cron == "0 3 * * 0" and drills[0].active  # weekly restore drill
        slugs = {b.slug for b in client.read_block_types()}
        assert {"smartaccounting-app-environment", "smartaccounting-release-target"} <= slugs


@pytest.mark.parametrize("pairs, error", [
    (["versoin=1.0.0"], "-p versoin: release has no such parameter"),
    (["environment=prod"], "-p environment: not a parameter here"),
    (["version=1.0"], "-p version"),
    (["db_strategy=sideways"], "-p db_strategy: 'sideways' is not one of"),
    (["wait=maybe"], "-p wait: 'maybe' is not valid"),
    (["novalue"], "expected key=value"),
])
def test_bad_parameters_are_named(pairs, error):
    schema = {"properties": {"environment": {"type": "string"}, "version": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                             "db_strategy": {"enum": ["undo", "restore", "none"], "type": "string"},
                             "wait": {"type": "boolean", "default": True}}, "required": ["environment"]}
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")):
        check_parameters("release", "prod", parse_parameters(pairs), schema)


def test_json_values_are_read_as_json():
    assert parse_parameters(["wait=false", 'digests={"backend": "sha256:ab"}', "version=1.2.3"]) == {
        "wait": False, "digests": {"backend": "sha256:ab"}, "version": "1.2.3"}


def test_trigger_refuses_bad_input_before_creating_a_run(write_env):
    import_environment(write_env("undeployed"), "undeployed")
    for args, said in ((["nope", "--env", "undeployed"], "unknown flow 'nope'"),
                       (["verify", "--env", "ghost"], "no blocks named 'ghost'"),
                       (["verify", "--env", "undeployed"], "no deployment verify/undeployed"),
                       (["verify", "--env", "undeployed", "--timeout", "5"], "--timeout needs --wait")):
        out = smartrelease("trigger", *args)
        assert out.returncode == 2, out.stderr
        assert said in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    with get_client(sync_client=True) as client:
        assert not [r for r in client.read_flow_runs(limit=200) if "undeployed" in r.name]


def test_a_second_holder_waits_or_fails_at_once_naming_the_first(write_env):
    import_environment(write_env("locking"), "locking")
    said = []
    with environment_lock("locking", me("first holder")):
        assert held("locking") and "first holder" in str(holder("locking"))
        with pytest.raises(Locked, match=r"locking is being changed by first holder by .*: not waiting"):
            with environment_lock("locking", me("second"), wait=False):
                pass
        with pytest.raises(Locked, match="waited 3 s"):
            with environment_lock("locking", me("third"), timeout_s=3, on_wait=said.append):
                pass
    assert said and "first holder" in str(said[0])
    assert not held("locking") and holder("locking") is None
    with pytest.raises(ConfigError, match="has no lock on this Prefect server"):
        with environment_lock("no-lock-made", me("x")):
            pass


def test_a_flow_run_that_died_holding_the_lock_is_marked_crashed_by_the_next_holder(write_env):
    """The lock's variable still names a flow run the server shows running (its process
    was killed, its lease ran out): the next holder ends it as Crashed and says so; a run
    that ended is left as it is."""
    from prefect import flow
    from prefect.states import Completed, Running
    from prefect.variables import Variable

    from smartrelease.record.lock import Holder

    @flow(name="killed-holder")
    def killed_holder():
        pass

    import_environment(write_env("burying"), "burying")
    with get_client(sync_client=True) as client:
        dead = client.create_flow_run(killed_holder, name="release-burying", state=Running())
        done = client.create_flow_run(killed_holder, name="release-burying-done", state=Completed())
    for run, expect in ((dead, True), (done, False)):
        Variable.set("smartrelease-lock-burying", Holder(what=f"{run.name} (flow run {run.id})",
                                                         flow_run_id=str(run.id)).model_dump(), overwrite=True)
        found = []
        with environment_lock("burying", me("next holder"), on_dead_holder=found.append):
            pass
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        if expect:
            assert found == [f"release-burying (flow run {dead.id}) died holding the lock (the server still showed it "
                             "RUNNING): marked Crashed"]
            assert state.is_crashed() and "found by next holder" in state.message
        else:
            assert found == [] and state.is_completed()


def test_two_holders_arriving_at_the_same_moment_one_waits_and_says_for_whom(write_env):
    # Both ask at once: the one the server refuses must report the wait and its holder
    # (it once queued silently inside Prefect and reported "locking2 was free").
    import_environment(write_env("locking2"), "locking2")
    start, waits, order = threading.Barrier(2), {}, []

    def run(name: str) -> None:
        said: list = []
        start.wait()
        with environment_lock("locking2", me(name), on_wait=said.append) as waited:
            order.append(name)
            waits[name] = (waited, said)
            time.sleep(1.5)  # held for a while: the other arrived at once, so it must wait (asserted below)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    first, second = order
    assert waits[first][0] < 1 and waits[first][1] == [], waits
    waited, said = waits[second]
    assert waited >= 1 and said and str(said[0]).startswith(f"{first} by "), waits


def test_a_holder_that_never_wrote_its_name_is_waited_for_as_such(write_env):
    # The slot taken the way the lock takes it, but no name written (as a holder killed
    # between the two): a waiter asks again once, then waits naming what it knows.
    from prefect.concurrency.sync import concurrency

    import_environment(write_env("unnamed"), "unnamed")
    said = []
    with concurrency(limit_name("unnamed"), occupy=1, strict=True, lease_duration=60):
        assert str(holder("unnamed")) == UNNAMED
        with pytest.raises(Locked, match=f"unnamed is being changed by {UNNAMED}: waited 2 s"):
            with environment_lock("unnamed", me("waiter"), timeout_s=2, on_wait=said.append):
                pass
    assert said and all(str(h) == UNNAMED for h in said)
    with environment_lock("unnamed", me("after"), wait=False):
        assert str(holder("unnamed")).startswith("after by ")


HOLD = """
import sys, time
from smartrelease.record.lock import environment_lock, me
with environment_lock(sys.argv[1], me("killed holder")):
    print("held", flush=True)
    time.sleep(600)
"""


def killed_holder(environment: str) -> None:
    """A process that takes the lock and is then SIGKILLed: no release, no cleanup."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, environment], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=os.environ.copy())
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_killed_holder_is_freed_at_once_by_unlock_with_its_reason_in_the_history(write_env):
    # (A killed holder's lease running out by itself: test_control_plane_e2e.py.)
    import_environment(write_env("wedged"), "wedged")
    killed_holder("wedged")
    assert "killed holder" in str(holder("wedged"))
    out = smartrelease("unlock", "--env", "wedged", "--reason", "holder killed in a drill")
    assert out.returncode == 0, out.stderr
    assert "unlocked (it was held by killed holder" in out.stdout
    assert not held("wedged")
    row = read_history("wedged")[-1]
    assert row["result"] == "unlocked" and row["reason"] == "holder killed in a drill"
    assert "killed holder" in row["holder"]
    with environment_lock("wedged", me("next holder"), wait=False):  # free now, not in 60 s
        assert holder("wedged").what.startswith("next holder by ")


HOLD_UNTIL_TOLD = """
import sys
from smartrelease.record.lock import environment_lock, me
with environment_lock(sys.argv[1], me("holder across a restart")):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@contextmanager
def on_server(settings):
    """This process (its threads too) as a client of `settings`' server."""
    with temporary_settings(server.client_settings(settings)), \
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
        yield


@contextmanager
def server_of_its_own(tmp_path):
    """A Prefect server of the test's own, to stop and start again."""
    settings = server.ServerSettings(state_dir=tmp_path / "server", host="127.0.0.1", port=free_port(),
                                     pg_port=free_port(), database_url=None)
    server.up(settings)
    try:
        yield settings
    finally:
        server.down(settings)
        server.destroy_database(settings)


def wait_for_text(path: Path, text: str, *, timeout_s: float) -> float:
    """When `text` appeared in the file at `path` (a process's log), waiting for it."""
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not said within {timeout_s:g} s: {path.read_text()[-3000:]}"
        time.sleep(0.2)
    return time.monotonic()


@contextmanager
def holding(settings, environment: str, *, env: dict[str, str] | None = None, **popen):
    """A process holding `environment`'s lock until `let_go` tells it to."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_TOLD, environment], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **server.client_environment(settings), **(env or {})}, **popen)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def let_go(proc, settings, environment: str) -> None:
    """The holder lets go; the lock is then free at once."""
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    assert proc.wait(timeout=60) == 0
    with on_server(settings):
        assert not held(environment)
        with environment_lock(environment, me("after the holder"), wait=False):
            assert holder(environment).what.startswith("after the holder by ")


@pytest.mark.e2e
def test_a_held_lock_survives_a_restart_of_the_server_and_is_released_after_it(tmp_path, write_env):
    """The server keeps leases on disk: with Prefect's default in-memory storage the
    holder's release after a restart would find no lease, and the slot stayed taken."""
    with server_of_its_own(tmp_path) as settings:
        with on_server(settings):
            import_environment(write_env("restarted"), "restarted")
        with holding(settings, "restarted") as proc:
            server.down(settings, keep_database=True)
            server.up(settings)
            with on_server(settings):
                assert holder("restarted").what.startswith("holder across a restart by ")
                with pytest.raises(Locked, match="being changed by holder across a restart"):
                    with environment_lock("restarted", me("second"), wait=False):
                        pass
            let_go(proc, settings, "restarted")


@pytest.mark.e2e
def test_a_holder_whose_lease_ran_out_in_a_server_outage_keeps_the_lock_while_it_runs(tmp_path, write_env):
    """Issue 31: the server away around a lease renewal (Prefect renews at 45 s of 60
    and gives up for good), the lease ran out under a holder that still ran, and the
    next run took the environment. Now the holder's heartbeat says it is alive and it
    takes the slot again; a run arriving meanwhile waits, naming it."""
    said = tmp_path / "holder.log"
    retaken = "lease ran out while this run held it"

    class Retaken(Exception):
        """The holder took its slot again, and the second run had waited on."""

    with server_of_its_own(tmp_path) as settings, said.open("w") as log:
        with on_server(settings):
            import_environment(write_env("outage"), "outage")
        # The holder's client does not retry in the background (PREFECT_CLIENT_MAX_RETRIES=0):
        # Prefect renews at 45 s of the lease's 60 and tries twice more, each attempt
        # then failing at once, and stops for good while the server is away. (With the
        # client's retries, an attempt may reach the server once it is back, before its
        # repossessor frees the slot, and the server renews a lease that ran out: then
        # nothing was lost, which is what happened in CI once.) The server comes back
        # once the lease has run out: at most 15 s after the failed renewal.
        with holding(settings, "outage", stderr=log, env={"PREFECT_CLIENT_MAX_RETRIES": "0"}) as proc:
            taken = time.monotonic()
            time.sleep(max(0.0, taken + 40 - time.monotonic()))
            server.down(settings, keep_database=True)
            failed = wait_for_text(said, "Concurrency lease renewal failed - slots are no longer reserved",
                                   timeout_s=2 * LEASE_S)
            time.sleep(max(0.0, failed + LEASE_S / 4 + 2 - time.monotonic()))
            server.up(settings)
            with on_server(settings):
                # A second run waits from the server's return on: through the lease
                # running out (the server's repossessor frees the slot, every 15 s), the
                # holder taking the slot again, and two heartbeats more. It never gets
                # the lock. (The moment the slot is freed is the server's: waiting a
                # fixed time for it failed once in CI, the server slow to come back.)
                seen, since = [], []

                def until_retaken(current):
                    seen.append(current)
                    if not since and retaken in said.read_text():
                        since.append(time.monotonic())
                    if since and time.monotonic() > since[0] + 2 * HEARTBEAT_S:
                        raise Retaken

                try:
                    with pytest.raises(Retaken):
                        with environment_lock("outage", me("second"), timeout_s=LEASE_S + 30, on_wait=until_retaken):
                            pytest.fail("the second run got the lock while its holder still ran")
                except Locked as exc:
                    pytest.fail(f"the holder never took its slot again ({exc}): {said.read_text()[-3000:]}")
                named = [h.what for h in seen if h is not None]
                assert named and all(w.startswith("holder across a restart by ") for w in named), named
                assert holder("outage").what.startswith("holder across a restart by ")
            let_go(proc, settings, "outage")


def test_a_release_that_waited_for_the_lock_runs_with_the_settings_saved_meanwhile(write_env):
    """Issue 31: a release read its blocks, then waited for the lock; a setting saved
    while it waited (here approval required, as a `guard off` would be) was ignored."""
    import logging

    from smartrelease.blocks import ReleaseTarget
    from smartrelease.flows.release import release
    from smartrelease.report import Report

    import_environment(write_env("waited", RELEASE_APPROVAL="none"), "waited")
    waiting = threading.Event()

    class Told(logging.Handler):
        def emit(self, record):
            if "waiting for waited" in record.getMessage():
                waiting.set()

    told, ended = Told(), {}
    logging.getLogger("prefect.flow_runs").addHandler(told)
    try:
        with environment_lock("waited", me("a holder")):
            worker = threading.Thread(target=lambda: ended.update(
                state=release("waited", version="1.0.0", return_state=True)))
            worker.start()
            assert waiting.wait(timeout=120), "the release never waited for the lock"
            target = ReleaseTarget.load("waited")
            target.approval = "required"
            target.save("waited", overwrite=True)
        worker.join(timeout=300)
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(told)
    report = ended["state"].result(raise_on_failure=False)
    assert isinstance(report, Report), report
    assert "approval" in [r.name for r in report.results], [r.name for r in report.results]
