"""The release history of an environment, one row per run, oldest first.

Each run writes its row as an artifact of its own (key `history-<env>-r<32 hex>`), so
runs appending at the same moment cannot lose each other's rows; the history is every
such row, in the order the server stored them. The table artifact
`release-history-<env>` is the view people read in the UI: every append publishes
it again from the rows as read then (a concurrent append may be missing from it until
the next one). Rows written before row artifacts existed are read from that table.
"""

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prefect import get_run_logger
from prefect.artifacts import Artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smartrelease.record.journal import PUBLISH_STEP, Entry, publish_run, replay_quietly
from smartrelease.report import CANCELLED, REJECTED, TIMED_OUT, Report, Status, StepResult

# The results that change what should run: a release, a rollback, an adoption (what
# ran, released by hand, when the tool took it over); a promotion runs nothing.
RELEASED, ROLLED_BACK, ADOPTED = "released", "rolled back", "adopted"
PROMOTED = "promoted"  # a SemVer tag given to a dev digest; runs nothing

HISTORY_LIMIT = 200  # rows shown in the UI's table; the history itself keeps every row
PAGE = 200
ROW_ID = re.compile(r"[0-9a-f]{32}")


def deployed(rows: list[dict]) -> list[dict]:
    """The stack of good deployments, oldest first: a release (or an adoption of what
    was released by hand) pushes its row, a rollback to version V pops down to V's row.
    The top is what should run now, the one below it is what a rollback goes back to.
    Failed releases leave it alone (they rolled themselves back, or never changed
    anything)."""
    stack: list[dict] = []
    for row in rows:
        if row.get("result") in (RELEASED, ADOPTED):
            stack.append(row)
        elif row.get("result") == ROLLED_BACK:
            while stack and stack[-1].get("version") != row.get("version"):
                stack.pop()
            stack[-1:] = [row]
    return stack


def history_key(environment: str) -> str:
    """The UI's table of the history."""
    return f"release-history-{environment}"


def row_key(environment: str, row_id: str = "") -> str:
    """A row's own artifact, named after its row_id: a row published twice (a journal
    entry replayed after a publish that failed half-way) is found, not written again."""
    return f"history-{environment}-r{row_id if ROW_ID.fullmatch(row_id) else uuid.uuid4().hex}"


def _row_artifacts(environment: str) -> list:
    """Every row artifact of `environment`, oldest first. The key's LIKE pattern also
    matches other environments' rows (`prod` matches `prod-rx`'s), so each key is
    checked whole."""
    mine = re.compile(rf"history-{re.escape(environment)}-r[0-9a-f]{{32}}")
    found, offset = {}, 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
                like_=f"history-{environment}-r%")), sort=ArtifactSort.CREATED_DESC, limit=PAGE, offset=offset)
            found.update((a.key, a) for a in page if a.key and mine.fullmatch(a.key))
            if len(page) < PAGE:
                break
            offset += PAGE  # newer rows arriving meanwhile shift the pages: keys dedupe the overlap
    return sorted(found.values(), key=lambda a: (a.created, a.key))


class HistoryRow(BaseModel):
    """What the flows rely on in a row; other columns are kept as they are."""

    model_config = ConfigDict(extra="allow")
    version: str = Field(min_length=1)
    result: str
    backend: str = ""
    frontend: str = ""


@dataclass
class History:
    raw: list = field(default_factory=list)  # every row as stored, rewritten as it was
    rows: list[dict] = field(default_factory=list)  # the rows that hold what a row must
    skipped: list[str] = field(default_factory=list)  # "row N: why", for each other row

    def summary(self) -> str:
        return f"{len(self.skipped)} malformed history row(s) skipped: " + "; ".join(self.skipped[:3])


def _table(data) -> list:
    """A table artifact's rows; ValueError when it is not a JSON list."""
    data = json.loads(data) if isinstance(data, str) else data
    if not isinstance(data, list):
        raise ValueError("not a list")
    return data


def load_history(environment: str) -> History:
    """The history, each row checked: a malformed one (edited by hand, or written by
    another tool) is named and skipped, never a crash."""
    history, view = History(), Artifact.get(history_key(environment))
    if view is not None and view.data:
        try:  # rows from before row artifacts: those of the UI's table without a row_id
            history.raw = [r for r in _table(view.data) if not (isinstance(r, dict) and r.get("row_id"))]
        except ValueError:
            history.skipped.append(f"the artifact {history_key(environment)} is not a JSON table")
    for artifact in _row_artifacts(environment):
        try:
            history.raw += _table(artifact.data)
        except ValueError:
            history.skipped.append(f"the artifact {artifact.key} is not a JSON table")
    history.rows, skipped = checked_rows(history.raw)
    history.skipped += skipped
    return history


def checked_rows(raw: list) -> tuple[list[dict], list[str]]:
    """(the rows that hold what a row must, "row N: why" for each other one). Never
    raises, and never quotes a row's content: it was written by hand or by another tool."""
    rows, skipped = [], []
    for number, item in enumerate(raw, 1):
        try:
            rows.append(HistoryRow.model_validate(item).model_dump())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])[:60] or "row"
            skipped.append(f"row {number}: {where}: {first['msg']}")
    return rows, skipped


def read_history(environment: str) -> list[dict]:
    """The well-formed rows, oldest first, after publishing what this host's journal kept
    (record/journal.py); a run's log names any skipped row and each late one published."""
    published = publish_kept(environment)  # what runs on this host could not publish: first
    history = load_history(environment)
    for line in published + ([history.summary()] if history.skipped else []):
        try:
            get_run_logger().warning(line)
        except MissingContextError:
            pass  # the CLI says it in its own words
    return history.rows


def last_release(environment: str) -> dict | None:
    """The row of what should run now, or None before the first release."""
    stack = deployed(read_history(environment))
    return stack[-1] if stack else None


def result_of(report: Report) -> str:
    approval = report.facts.approval if report.facts else None
    if approval and approval.decision == REJECTED:
        return f"rejected by {approval.approver}"
    if approval and approval.decision == TIMED_OUT:
        return "approval timed out"
    if approval and approval.decision == CANCELLED:
        return "cancelled at approval"
    if report.ok:
        return {"rollback": ROLLED_BACK, "promote": PROMOTED, "adopt": ADOPTED}.get(report.flow, RELEASED)
    failed = ", ".join(r.name for r in report.failures())
    rb = report.facts.rollback if report.facts else None
    if report.flow == "release" and rb is not None:
        return f"failed at {failed}; " + (f"rolled back to {rb.to_version}" if rb.recovered else "NOT recovered")
    return f"failed at {failed}"


NO_VERSION = "(none decided)"


def history_row(report: Report, images: dict[str, str], flow_run_name: str, flow_run_id: str = "") -> dict:
    """The history row of a release, rollback or promotion."""
    facts = report.facts
    return {
        "row_id": uuid.uuid4().hex,
        "finished": now_text(),
        # A rollback that failed before deciding its target has no version: its row
        # still counts, and must read back as a row.
        "version": facts.version or NO_VERSION,
        "previous": facts.previous_version or "",
        "result": result_of(report),
        "backend": images.get("backend", ""),
        "frontend": images.get("frontend", ""),
        "git_sha": facts.git_sha or "",
        "migrations": ", ".join(facts.migrations_applied),
        "backup": facts.backup or "",
        # The backup's SHA-256 as taken: a restore checks the file against this, not
        # only against the checksum file beside it, which anyone who can write there can forge.
        "backup_sha256": facts.backup_sha256 or "",
        # Applied by this run and undone by its rollback: a drill of the safety backup
        # taken in between finds them in it.
        "migrations_undone": ", ".join(facts.rollback.migrations_undone) if facts.rollback else "",
        # Still applied after this run's rollback (a migration without a down step, strategy none).
        "migrations_left": ", ".join(facts.rollback.migrations_left) if facts.rollback else "",
        # Schema changes a rollback could not take back (a migration that failed half-way).
        "schema_left": f"{len(facts.rollback.schema_left)} difference(s)" if facts.rollback and facts.rollback.schema_left else "",
        "flow_run": flow_run_name,
        "flow_run_id": flow_run_id,  # promotion's evidence: the run is read back by id
        "triggered_by": facts.triggered_by,
        "approval": facts.approval.line() if facts.approval else "",
    }


def now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def event_row(version: str, result: str, flow_run_name: str = "", flow_run_id: str = "", **columns: str) -> dict:
    """A row for what is not a release: a verify, an unlock. `version` is what was
    running (or expected) then."""
    return {"row_id": uuid.uuid4().hex, "finished": now_text(), "version": version, "result": result,
            "flow_run": flow_run_name, "flow_run_id": flow_run_id, **columns}


def append_row(environment: str, row: dict) -> None:
    """Store `row` as an artifact of its own (once: a row already stored is not stored
    again), then publish the UI's table again."""
    key = row_key(environment, str(row.get("row_id", "")))
    if Artifact.get(key) is None:
        create_table_artifact(key=key, table=[row],
                              description=f"A row of {environment}'s release history: {row['result']}")
    rows = load_history(environment).raw  # this row included
    # Rows from before row artifacts live only in this table: they stay in it.
    legacy = [r for r in rows if not (isinstance(r, dict) and r.get("row_id"))]
    recent = [r for r in rows if isinstance(r, dict) and r.get("row_id")][-HISTORY_LIMIT:]
    create_table_artifact(key=history_key(environment), table=legacy + recent,
                          description=f"Release history of {environment}, newest last")


def publish_entry(entry: Entry) -> None:
    """A run's publication: its report artifact, then its history row."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=entry.artifact_key, markdown=entry.markdown, description=entry.description)
    append_row(entry.environment, entry.row)


def publish(entry: Entry) -> str | None:
    """`entry` published, journaled first (record/journal.py): None, or the gap, named."""
    return publish_run(entry, publish_entry)


def publish_kept(environment: str) -> list[str]:
    """What this host's journal kept for `environment`, published now; a line each."""
    return replay_quietly(environment, publish_entry)


def publish_report(report: Report, artifact_key: str, description: str, row: dict) -> Report:
    """Publish a run's report and history row; when the server cannot be reached, the
    report gets a `publish` warning naming the gap (the run's log says it too)."""
    from prefect.runtime import flow_run

    gap = publish(Entry(environment=report.environment, report=report.model_dump(mode="json"),
                        artifact_key=artifact_key, markdown=report.markdown(), description=description, row=row,
                        ok=report.ok, flow_run_id=str(flow_run.id or "")))
    if gap is None:
        return report
    get_run_logger().warning("%s: %s", PUBLISH_STEP, gap)
    return report.model_copy(update={"results": [*report.results, StepResult(
        name=PUBLISH_STEP, status=Status.WARNING, detail=gap, duration_ms=0)]})


def publish_run_report(report: Report, description: str, images: dict[str, str], key: str = "") -> Report:
    """A release's, rollback's, promotion's or adoption's report as `<flow>-<env>` (or
    `key`), and its history row (history_row), journaled first."""
    from prefect.runtime import flow_run

    return publish_report(report, key or f"{report.flow}-{report.environment}", description,
                          history_row(report, images, flow_run.name or "", str(flow_run.id or "")))
