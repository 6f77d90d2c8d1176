"""Programs that fail are reported by name, exit code and the stderr lines naming
the cause, masked; every one runs within a time limit. Real programs, real failures."""

import os
import tempfile
from pathlib import Path

import pytest

from smartrelease.local_postgres import Cluster
from smartrelease.errors import CommandFailed
from smartrelease.process import Command, cause_lines, run
from smartrelease.redact import remember
from pydantic import SecretStr

from smartrelease.tasks.backup.files import BackupError, dump_database_encrypted
from smartrelease.tasks.pg_client import HostTools
from smartrelease.adapters.postgres import DatabaseUrl
from smartrelease.adapters.compose import ComposeProject
from tests.conftest import free_port


def test_cause_lines_prefer_the_lines_that_say_why():
    stderr = "The files belonging to this database system will be owned by user \"postgres\".\n\n" \
             "initdb: error: could not access directory \"/x/data\": Permission denied\nSuccess. ignore\n"
    assert cause_lines(stderr) == 'initdb: error: could not access directory "/x/data": Permission denied'
    assert cause_lines("one\ntwo\nthree\nfour\nfive\n") == "two | three | four | five"  # else the last lines
    assert cause_lines("", "Data page checksums are disabled.\nfatal: oops\n") == "fatal: oops"


def test_a_secret_across_the_cut_of_a_long_error_line_is_masked_whole():
    """A line is cut to 400 characters: masked after the cut, a secret across it left
    its first characters in the error (issue 31)."""
    secret = "Zq8vNw3LpT6yRk1HsX9bDm4Gc"
    remember([secret])
    line = "error: " + "x" * 375 + f" password={secret} was refused"  # the secret starts at 392
    with pytest.raises(CommandFailed) as failed:
        run(Command(("sh", "-c", 'echo "$LINE" >&2; exit 1'), timeout_s=10, env={"LINE": line, "PATH": os.environ["PATH"]}))
    said = str(failed.value)
    assert secret[:6] not in said and "password=***" in said, said


def test_a_command_is_a_value_named_after_its_program_and_keeps_its_environment_out_of_repr():
    cmd = Command(("docker", "compose", "--file", "f.yml", "up"), timeout_s=5, env={"JWT_SECRET": "x" * 40})
    assert cmd.name == "docker compose"
    assert "x" * 40 not in repr(cmd)
    assert Command(("/usr/lib/postgresql/15/bin/initdb", "-D", "d"), timeout_s=5).name == "initdb"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, the server runs as `postgres`")
def test_initdb_in_a_directory_postgres_cannot_reach_names_the_real_cause():
    # The reproduction: before, only initdb's last stdout line was shown
    # ("Data page checksums are disabled."), hiding the permission error.
    private = Path(tempfile.mkdtemp(prefix="smartrelease-private-"))  # 0700
    try:
        with pytest.raises(CommandFailed) as exc:
            Cluster(private / "pg", free_port()).init()
        assert exc.value.command == "initdb" and exc.value.exit_code == 1
        assert "Permission denied" in str(exc.value) and "initdb failed (exit 1): " in str(exc.value)
        assert "checksums" not in str(exc.value)
    finally:
        import shutil

        shutil.rmtree(private, ignore_errors=True)


def test_pg_dump_against_a_closed_port_says_connection_refused(tmp_path):
    with pytest.raises(BackupError) as exc:
        dump_database_encrypted(HostTools(DatabaseUrl("127.0.0.1", free_port(), "app", "app",
                                                      SecretStr("pw-for-nothing"))),
                                tmp_path / "x.dump.enc", "a passphrase of the test's", timeout_s=30)
    assert str(exc.value).startswith("pg_dump failed (exit 1): ")
    assert "Connection refused" in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_compose_with_a_missing_file_names_compose_and_the_file(tmp_path):
    project = ComposeProject(str(tmp_path / "absent.yml"), "smartrelease-absent", {"JWT_SECRET": "j" * 40})
    with pytest.raises(CommandFailed) as exc:
        run(project.up())
    assert exc.value.command == "docker compose up" and exc.value.exit_code not in (0, None)
    assert "absent.yml" in exc.value.cause and "no such file" in exc.value.cause.lower()


def test_a_program_that_outlives_its_limit_is_stopped_and_named():
    with pytest.raises(CommandFailed) as exc:
        run(Command(("sleep", "30"), timeout_s=0.3))
    assert str(exc.value) == "sleep timed out: no result within 0.3 s"


def test_a_secret_in_a_programs_stderr_is_masked_in_the_error():
    secret = "stderr-SENTINEL-4c1b9e"
    remember([secret])
    with pytest.raises(CommandFailed) as exc:
        run(Command(("sh", "-c", f"echo 'error: login failed for {secret}' >&2; exit 3"), timeout_s=10))
    assert str(exc.value) == "sh failed (exit 3): error: login failed for ***"


def test_a_missing_program_is_named():
    with pytest.raises(CommandFailed, match="no-such-program is not installed"):
        run(Command(("no-such-program",), timeout_s=5))


def test_stopping_a_background_program_stops_what_it_started_in_a_session_of_its_own(tmp_path):
    """As a Prefect worker starts each flow run (a session of its own, out of reach of
    a signal to the worker's process group): `stop` ends it too. The child ignores
    SIGTERM, so only the SIGKILL after the time limit ends it."""
    import sys
    import time

    import psutil

    from smartrelease.daemon import Background

    child_pid = tmp_path / "child.pid"
    leader = ("import signal, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'], start_new_session=True)\n"
              f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(600)\n")
    program = Background(tmp_path / "leader.pid", tmp_path / "leader.log")
    proc = program.start([sys.executable, "-c", leader])
    deadline = time.monotonic() + 30
    while not child_pid.is_file() or not child_pid.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, program.log_tail()
        time.sleep(0.05)
    child = psutil.Process(int(child_pid.read_text()))
    assert os.getsid(child.pid) != os.getsid(proc.pid)  # out of reach of the leader's group
    assert program.stop(timeout_s=2)
    child.wait(timeout=10)  # raises if it is still running
    assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
    assert proc.wait(timeout=5) is not None and program.pid() is None


def test_stopping_signals_each_process_once(tmp_path):
    """A second SIGTERM would land in the clean-up the first one started (a flow run
    letting its lock go, then reporting its crash): each process gets exactly one."""
    import sys
    import time

    from smartrelease.daemon import Background

    got, ready = tmp_path / "got", tmp_path / "ready"
    child = ("import signal, sys, time\n"
             f"def term(*_):\n    open({str(got)!r}, 'a').write('TERM\\n'); time.sleep(1); sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, term)\n"
             f"open({str(ready)!r}, 'w').write('x')\n"
             "time.sleep(600)\n")
    leader = ("import subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True)\n"
              "time.sleep(600)\n")
    program = Background(tmp_path / "leader.pid", tmp_path / "leader.log")
    proc = program.start([sys.executable, "-c", leader])
    deadline = time.monotonic() + 30
    while not ready.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, program.log_tail()
        time.sleep(0.05)
    assert program.stop(timeout_s=10)
    assert got.read_text() == "TERM\n"


def test_a_leader_that_does_not_end_on_sigterm_is_killed_once_what_it_started_has_ended(tmp_path):
    """A Prefect 3.9 worker does not end on SIGTERM (sandbox/plane.py): once its flow
    runs (here, a child in a session of its own that ends on SIGTERM) have ended, it
    gets `alone_s`, then SIGKILL, not the whole time limit."""
    import signal
    import sys
    import time

    from smartrelease.daemon import Background

    ready, ended = tmp_path / "ready", tmp_path / "ended"
    child = ("import signal, sys, time\n"
             f"def term(*_):\n    open({str(ended)!r}, 'w').write('TERM'); sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, term)\n"
             f"open({str(ready)!r}, 'w').write('x')\n"
             "time.sleep(600)\n")
    leader = ("import signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              f"subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True)\n"
              "time.sleep(600)\n")
    program = Background(tmp_path / "leader.pid", tmp_path / "leader.log", alone_s=0.5)
    proc = program.start([sys.executable, "-c", leader])
    deadline = time.monotonic() + 30
    while not ready.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, program.log_tail()
        time.sleep(0.05)
    started = time.monotonic()
    assert program.stop(timeout_s=120)
    assert time.monotonic() - started < 60  # not the 120 s limit
    assert ended.read_text() == "TERM"  # what it started ended on its SIGTERM, before the leader went
    assert proc.wait(timeout=5) == -signal.SIGKILL
