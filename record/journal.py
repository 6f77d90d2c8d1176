"""What a run publishes at its end (its report artifact and its history row), kept
first in a local journal, so a Prefect server that is unreachable when the run ends
loses nothing.

A release that has launched finishes, or rolls back, without the server: its tasks
need only Docker Engine and the database. What it cannot do without the server is
publish. So `publish_run` writes the entry to this host's journal (SMARTRELEASE_JOURNAL,
default ~/.local/state/smartrelease/journal; one file per run, mode 0600, under the
server's address and the environment's name), publishes it, and removes the file.
When the server cannot be reached, the file stays and the run names the gap. The
next run on this host that reads the history publishes every entry kept for that
server (`replay`), oldest first: the report artifact, the history row (with a
`recorded_late` column saying why), and the run's final state, when the server still
shows it running.
"""

import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Failed
from pydantic import BaseModel

from smartrelease.errors import ConfigError
from smartrelease.report import Report
from smartrelease.adapters.http import answers

PUBLISH_STEP = "publish"

UNREACHABLE = (httpx.TransportError,)  # connection refused, timeouts: the server is away, not answering wrongly
PUBLISH_WAIT_S = 30  # how long a run's end waits for the server to answer before keeping its entry


class Entry(BaseModel):
    """A run's publication: its report artifact and its history row."""

    environment: str
    report: dict  # the Report, for a command whose run could not tell the server its end
    artifact_key: str
    markdown: str
    description: str
    row: dict
    ok: bool  # the run's outcome, for its final state when the server could not be told
    flow_run_id: str = ""
    written: str = ""


def journal_dir() -> Path:
    return Path(os.environ.get("SMARTRELEASE_JOURNAL") or Path.home() / ".local" / "state" / "smartrelease" / "journal")


def _server_dir() -> Path:
    """The journal of the server runs publish to: two servers on one host (two clones'
    sandboxes, say, each with an environment named `sandbox`) never replay each other's
    entries."""
    url = api_url()
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", url.removeprefix("http://").removeprefix("https://")).strip("-")
    readable = readable or "ephemeral"  # no PREFECT_API_URL: Prefect's server of the process, on this host
    return journal_dir() / "servers" / f"{readable[:60]}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def _path(environment: str, entry_id: str) -> Path:
    return _server_dir() / environment / f"{time.time_ns():020d}-{entry_id}.json"


def kept(environment: str) -> list[Path]:
    """The entries kept for `environment` on this server, oldest first."""
    # Entries written before the journal was kept per server (journal/<environment>)
    # name no server: they go to the one in use, as they did then.
    found = [p for d in (_server_dir() / environment, journal_dir() / environment) if d.is_dir()
             for p in d.glob("*.json")]
    # (Not the hidden ones: an entry being written, or taken by a run publishing it.)
    return sorted((p for p in found if not p.name.startswith(".")), key=lambda p: p.name)


def write(entry: Entry) -> Path:
    """Write `entry` to the journal: whole (a temporary file renamed) or not at all."""
    path = _path(entry.environment, uuid.uuid4().hex)
    partial = path.with_name("." + path.name)
    try:
        journal_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        for directory in (journal_dir() / "servers", path.parent.parent, path.parent):
            directory.mkdir(exist_ok=True, mode=0o700)  # each one private
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(entry.model_dump_json())
            f.flush()
            os.fsync(f.fileno())
        partial.rename(path)
    except OSError as exc:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass  # its directory could not be made: there is no partial file
        raise ConfigError(f"cannot write the run's journal entry in {path.parent}: {exc.strerror or exc}") from None
    return path


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or ""


def _answers() -> bool:
    if not api_url():  # Prefect's ephemeral mode: a server of this process's own, started by its client
        with get_client(sync_client=True) as client:
            return client.api_healthcheck() is None
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    return answers(f"{api_url()}/health", ca_bundle=PREFECT_API_SSL_CERT_FILE.value() or None)


def server_answers_within(timeout_s: float) -> bool:
    """Whether the Prefect API answers its health check within `timeout_s` (one try at 0)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if _answers():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


def unreachable_reason(why: BaseException | str) -> str:
    why = why if isinstance(why, str) else f"{type(why).__name__}: {str(why)[:120]}"
    return f"the Prefect server at {api_url() or 'PREFECT_API_URL'} could not be reached ({why})"


def publish_run(entry: Entry, publish: Callable[[Entry], None]) -> str | None:
    """Publish `entry` with `publish` (journaled first: record/history.py publishes its
    report artifact and history row); None when published, else the gap, named: what
    could not be published, why, and where it is kept meanwhile."""
    path = write(entry)
    kept_in = (f": this run's report and history row are kept in {path} and are published by the next run on "
               f"this host that reads {entry.environment}'s history")
    if not server_answers_within(PUBLISH_WAIT_S):
        return unreachable_reason(f"no answer within {PUBLISH_WAIT_S} s") + kept_in
    # Taken, as `replay` takes an entry, before it is published: a reader of the history
    # at that moment (another run on this host) would publish it a second time.
    taken = path.with_name(".publishing-" + path.name)
    try:
        path.rename(taken)
    except FileNotFoundError:
        return None  # a reader of the history took it first, and publishes it
    try:
        publish(entry)
    except UNREACHABLE as exc:
        taken.rename(path)
        return unreachable_reason(exc) + kept_in
    except BaseException:
        taken.rename(path)
        raise
    taken.unlink(missing_ok=True)
    return None


def written_since(environment: str, since_ns: int) -> tuple[Path, Entry] | None:
    """The newest entry kept for `environment` written after `since_ns` (time.time_ns())."""
    for path in reversed(kept(environment)):
        if int(path.name.split("-", 1)[0]) >= since_ns:
            try:
                return path, Entry.model_validate_json(path.read_text())
            except (OSError, ValueError):
                return None
    return None


def gap_of(report: Report) -> str:
    """"; <the gap>" when the report could not be published, else ""."""
    return "".join(f"; not published: {r.detail}" for r in report.results if r.name == PUBLISH_STEP)


def late(entry: Entry, written: str) -> Entry:
    """`entry` as published after the server came back: its row says so, and its report too."""
    note = f"published late: the Prefect server was unreachable when the run ended ({written})"
    return entry.model_copy(update={"row": {**entry.row, "recorded_late": note},
                                    "markdown": f"> **{note}**\n\n{entry.markdown}"})


def _finish_run(flow_run_id: str, ok: bool, result: str) -> bool:
    """Give the run its final state when the server still shows it unfinished (its
    end could not be told); True when it did."""
    with get_client(sync_client=True) as client:
        try:
            run: FlowRun = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return False
        if run.state is not None and run.state.is_final():
            return False
        message = f"{result} (recorded late: the Prefect server was unreachable when the run ended)"
        state = Completed(message=message) if ok else Failed(message=message)
        client.set_flow_run_state(flow_run_id, state, force=True)
        return True


def replay(environment: str, publish: Callable[[Entry], None]) -> list[str]:
    """Publish every entry kept for `environment` with `publish`, oldest first; one line per entry.
    A server still unreachable stops the replay (the entries stay); an entry that is
    not readable is left in place and named."""
    done = []
    for path in kept(environment):
        try:
            entry = Entry.model_validate_json(path.read_text())
        except FileNotFoundError:
            continue  # another reader took it
        except (OSError, ValueError):
            done.append(f"{path}: not a readable journal entry; left in place")
            continue
        taken = path.with_name(".replaying-" + path.name)
        try:
            path.rename(taken)  # atomic: two readers never publish one entry twice
        except FileNotFoundError:
            continue
        written = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(int(path.name.split("-", 1)[0]) / 1e9))
        try:
            publish(late(entry, written))
            if entry.flow_run_id:
                _finish_run(entry.flow_run_id, entry.ok, entry.row.get("result", ""))
        except BaseException:
            taken.rename(path)  # kept for the next reader
            raise
        taken.unlink()
        done.append(f"published {entry.row.get('result', '')} of {written} from the journal ({path.name})")
    return done


def replay_quietly(environment: str, publish: Callable[[Entry], None]) -> list[str]:
    """`replay`, for a reader of the history: entries not readable stay and are named,
    and a server that cannot be reached leaves them for the next reader."""
    try:
        return replay(environment, publish)
    except UNREACHABLE:
        return []
