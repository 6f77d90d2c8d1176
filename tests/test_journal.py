"""The local journal of a run's publication, against the suite's real Prefect server
and against an address where no server answers: published at once when it can be,
kept (and named) when it cannot, published late exactly once when the server is back."""

import json
import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from prefect.artifacts import Artifact
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from smartrelease.record import journal
from smartrelease.record.history import history_row, load_history, publish, publish_entry, publish_kept, read_history
from smartrelease.report import ReleaseFacts, Report, Status, StepResult
from tests.conftest import free_port
from tests.forwarder import Forwarder


@pytest.fixture(autouse=True)
def own_journal(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTRELEASE_JOURNAL", str(tmp_path / "journal"))
    monkeypatch.setattr(journal, "PUBLISH_WAIT_S", 0)


def entry(environment: str, version: str) -> journal.Entry:
    report = Report(flow="release", environment=environment, facts=ReleaseFacts(version=version),
                    results=[StepResult(name="verify", status=Status.PASSED, detail="ok", duration_ms=1)])
    return journal.Entry(environment=environment, report=report.model_dump(mode="json"),
                         artifact_key=f"release-{environment}", markdown=f"# {version}", description="test",
                         row=history_row(report, {}, "run-x"), ok=True)


@pytest.fixture
def server_at():
    """One address for the suite's Prefect server that can be away (nothing listens
    there) and then back (a TCP forwarder to the real server): the journal keeps entries
    per server address, so the server that comes back must be at the same one."""
    port, real = free_port(), urlsplit(PREFECT_API_URL.value())
    url = f"http://127.0.0.1:{port}/api"

    @contextmanager
    def away():
        """Nobody answers there, and one retry per call."""
        with temporary_settings({PREFECT_API_URL: url, PREFECT_CLIENT_MAX_RETRIES: 0}):
            yield

    @contextmanager
    def back():
        forwarder = Forwarder(port, (real.hostname, real.port)).start()
        try:
            with temporary_settings({PREFECT_API_URL: url}):
                yield
        finally:
            forwarder.stop()

    yield away, back


def test_a_reachable_server_gets_the_row_and_the_report_and_nothing_is_kept():
    assert publish(entry("journal-ok", "1.0.0")) is None
    assert journal.kept("journal-ok") == []
    [row] = load_history("journal-ok").rows
    assert row["version"] == "1.0.0" and "recorded_late" not in row
    assert Artifact.get("release-journal-ok").data == "# 1.0.0"


def test_an_unreachable_server_keeps_the_entry_names_the_gap_and_the_next_reader_publishes_it_once(server_at):
    away, back = server_at
    with away():
        gap = publish(entry("journal-away", "2.0.0"))
        assert publish_kept("journal-away") == []  # still away: kept for the next reader
        [path] = journal.kept("journal-away")
    assert gap.startswith("the Prefect server at http://127.0.0.1:") and "could not be reached" in gap
    assert f"kept in {path}" in gap
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert load_history("journal-away").rows == []  # the gap is real

    with back():  # the server answers again, at the same address
        rows = read_history("journal-away")
    assert [r["version"] for r in rows] == ["2.0.0"]
    assert rows[0]["recorded_late"].startswith("published late: the Prefect server was unreachable")
    assert Artifact.get("release-journal-away").data.startswith("> **published late")
    with back():
        assert journal.kept("journal-away") == []
        assert len(read_history("journal-away")) == 1  # published once, not at every read


def test_an_entry_kept_for_one_server_is_never_published_to_another(server_at):
    """Two clones' sandboxes on one host, each with its own server and an environment
    of the same name: one's kept entry is replayed into its own server only."""
    away, back = server_at
    with away():
        publish(entry("journal-two-servers", "2.5.0"))
    assert journal.kept("journal-two-servers") == []  # the suite's server (another address) has none
    assert read_history("journal-two-servers") == []
    with back():
        [path] = journal.kept("journal-two-servers")
        assert [r["version"] for r in read_history("journal-two-servers")] == ["2.5.0"]


EPHEMERAL_PUBLISH = """
import json
from prefect.artifacts import Artifact
from smartrelease.record import journal
from smartrelease.record.history import load_history, publish
from tests.test_journal import entry

journal.PUBLISH_WAIT_S = 1
gap = publish(entry("journal-ephemeral", "2.7.0"))
print(json.dumps({"gap": gap, "kept": [str(p) for p in journal.kept("journal-ephemeral")],
                  "rows": [r["version"] for r in load_history("journal-ephemeral").rows],
                  "artifact": Artifact.get("release-journal-ephemeral").data}))
"""


@pytest.mark.e2e  # a whole Prefect server starts on a new SQLite database: 20 s, so not in `make test-fast`
def test_a_run_on_prefects_ephemeral_server_publishes_at_once(tmp_path):
    """With no PREFECT_API_URL, Prefect runs a server of its own for the process (its
    "ephemeral" mode, as `python benchmarks/cutover.py` does): a run publishes to it,
    and is not kept as if a server were away (it waited 30 s, then kept every entry)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), SMARTRELEASE_JOURNAL=str(tmp_path / "journal"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="ERROR",
               # A bound, not a wait: Prefect's 20 s ran out on a loaded machine (a whole
               # server starting on a new database) and failed the run.
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    done = subprocess.run([sys.executable, "-c", EPHEMERAL_PUBLISH], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    published = json.loads(done.stdout.strip().splitlines()[-1])
    assert published == {"gap": None, "kept": [], "rows": ["2.7.0"], "artifact": "# 2.7.0"}, published


def test_an_entry_kept_before_entries_were_kept_per_server_is_still_published(tmp_path):
    """An entry an earlier version wrote (journal/<environment>/, no server named) is
    published to the server in use, as it was then: an upgrade loses nothing."""
    legacy = tmp_path / "journal" / "journal-legacy"
    legacy.mkdir(parents=True, mode=0o700)
    (legacy / "00000000000000000001-abc.json").write_text(entry("journal-legacy", "2.6.0").model_dump_json())
    assert [r["version"] for r in read_history("journal-legacy")] == ["2.6.0"]
    assert journal.kept("journal-legacy") == []


def test_entries_are_published_oldest_first(server_at):
    away, back = server_at
    with away():
        for version in ("3.0.0", "3.1.0", "3.2.0"):
            publish(entry("journal-order", version))
    with back():
        assert [r["version"] for r in read_history("journal-order")] == ["3.0.0", "3.1.0", "3.2.0"]


def test_an_unreadable_entry_is_left_in_place_and_named(server_at):
    away, back = server_at
    with away():
        publish(entry("journal-bad", "4.0.0"))
        [path] = journal.kept("journal-bad")
    path.write_text("{not json")
    with back():
        assert journal.replay("journal-bad", publish_entry) == [f"{path}: not a readable journal entry; left in place"]
    assert path.exists() and load_history("journal-bad").rows == []


def test_the_report_of_a_run_that_could_not_tell_its_end_is_found_by_the_time_it_started(server_at):
    import time

    away, _ = server_at
    started = time.time_ns()
    with away():
        publish(entry("journal-since", "5.0.0"))
        path, found = journal.written_since("journal-since", started)
        assert Report.model_validate(found.report).facts.version == "5.0.0" and path.exists()
        assert journal.written_since("journal-since", time.time_ns()) is None


def test_a_journal_that_cannot_be_written_is_a_named_error(tmp_path, monkeypatch):
    from smartrelease.errors import ConfigError

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SMARTRELEASE_JOURNAL", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="cannot write the run's journal entry in"):
        journal.write(entry("journal-unwritable", "6.0.0"))


def test_the_cli_prints_the_kept_report_of_a_run_whose_end_could_not_be_told(capsys, server_at):
    """`smartrelease release` when Prefect raises at the run's end (its final state could
    not be sent): the report is read back from the journal, and the gap is named."""
    import time

    import httpx

    from smartrelease.cli import _kept_report
    from smartrelease.errors import ConfigError

    started = time.time_ns()
    with pytest.raises(ConfigError, match="the run kept no report"):
        _kept_report("release", "journal-cli", started, httpx.ConnectError("refused"))
    away, _ = server_at
    with away():
        publish(entry("journal-cli", "7.0.0"))
        report = _kept_report("release", "journal-cli", started, httpx.ConnectError("refused"))
        [path] = journal.kept("journal-cli")
    assert report.facts.version == "7.0.0" and report.ok
    err = capsys.readouterr().err
    assert "could not be reached (ConnectError: refused) at the run's end" in err and str(path) in err


def test_a_reader_of_the_history_while_a_run_publishes_does_not_publish_its_entry_again(monkeypatch):
    """Another run on the host reads the history (and replays what the journal keeps)
    at the very moment this run publishes: the row is recorded once."""
    replayed = []

    def publish_while_another_reads(entry):
        replayed.extend(journal.replay("journal-race", publish_entry))
        publish_entry(entry)

    assert journal.publish_run(entry("journal-race", "8.0.0"), publish_while_another_reads) is None
    assert replayed == [] and journal.kept("journal-race") == []
    assert [r["version"] for r in load_history("journal-race").rows] == ["8.0.0"]


def test_a_row_published_again_after_a_publish_that_failed_half_way_is_stored_once():
    """Issue 31: the row was stored, then the report's publication failed; the entry
    stayed in the journal, and its replay stored the row a second time: two "released"
    rows, and a rollback without --to aimed at the version already running."""
    kept_entry = entry("journal-twice", "5.0.0")
    publish_entry(kept_entry)  # the first try got this far
    publish_entry(journal.late(kept_entry, "earlier"))  # the replay
    assert [r["version"] for r in load_history("journal-twice").rows] == ["5.0.0"]


def test_a_writer_killed_before_its_rename_leaves_a_hidden_file_that_no_reader_trips_on(server_at):
    """A `.NNN-id.json` left by a killed writer: `*.json` matches it, and every
    rollback, verify and drill on the host failed on `int()` of its name."""
    away, back = server_at
    with away():
        publish(entry("journal-killed", "6.0.0"))
        [path] = journal.kept("journal-killed")
    (path.parent / ("." + path.name.replace("json", "x.json"))).write_text("{half")
    with back():
        assert [r["version"] for r in read_history("journal-killed")] == ["6.0.0"]
        assert journal.written_since("journal-killed", 0) is None and journal.kept("journal-killed") == []
