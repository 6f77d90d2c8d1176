"""The release history of an environment: a Prefect table artifact keyed
`release-history-<env>`, one row per release run, newest last. Each release
publishes the whole table again, so the artifact's latest version is the history."""

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prefect import get_run_logger
from prefect.artifacts import Artifact, create_table_artifact
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smartrelease.report import Report
from tasks.rollback_inputs import RELEASED, ROLLED_BACK, deployed

PROMOTED = "promoted"  # a SemVer tag given to a dev digest; runs nothing

HISTORY_LIMIT = 200  # rows kept in the artifact; older ones stay in its earlier versions


def history_key(environment: str) -> str:
    return f"release-history-{environment}"


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


def load_history(environment: str) -> History:
    """The history, each row checked: a malformed one (edited by hand, or written by
    another tool) is named and skipped, never a crash."""
    artifact = Artifact.get(history_key(environment))
    if artifact is None or not artifact.data:
        return History()
    try:
        data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    except ValueError:
        return History(skipped=[f"the artifact {history_key(environment)} is not JSON"])
    history = History(raw=list(data) if isinstance(data, list) else [])
    for number, raw in enumerate(history.raw, 1):
        try:
            history.rows.append(HistoryRow.model_validate(raw).model_dump())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "row"
            history.skipped.append(f"row {number}: {where}: {first['msg']}")
    return history


def read_history(environment: str) -> list[dict]:
    """The well-formed rows, oldest first; a run's log names any skipped."""
    history = load_history(environment)
    if history.skipped:
        try:
            get_run_logger().warning(history.summary())
        except MissingContextError:
            pass  # the CLI says it in its own words
    return history.rows


def last_release(environment: str) -> dict | None:
    """The row of what should run now, or None before the first release."""
    stack = deployed(read_history(environment))
    return stack[-1] if stack else None


def result_of(report: Report) -> str:
    if report.ok:
        return {"rollback": ROLLED_BACK, "promote": PROMOTED}.get(report.flow, RELEASED)
    failed = ", ".join(r.name for r in report.failures())
    rb = report.facts.rollback if report.facts else None
    if report.flow == "release" and rb is not None:
        return f"failed at {failed}; " + (f"rolled back to {rb.to_version}" if rb.recovered else "NOT recovered")
    return f"failed at {failed}"


def append_history(report: Report, images: dict[str, str], flow_run_name: str, flow_run_id: str = "") -> None:
    facts = report.facts
    row = {
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        "version": facts.version,
        "previous": facts.previous_version or "",
        "result": result_of(report),
        "backend": images.get("backend", ""),
        "frontend": images.get("frontend", ""),
        "git_sha": facts.git_sha or "",
        "migrations": ", ".join(facts.migrations_applied),
        "backup": facts.backup or "",
        # Still applied after this run's rollback (a migration without a down step, strategy none).
        "migrations_left": ", ".join(facts.rollback.migrations_left) if facts.rollback else "",
        # Schema changes a rollback could not take back (a migration that failed half-way).
        "schema_left": f"{len(facts.rollback.schema_left)} difference(s)" if facts.rollback and facts.rollback.schema_left else "",
        "flow_run": flow_run_name,
        "flow_run_id": flow_run_id,  # promotion's evidence: the run is read back by id
        "triggered_by": facts.triggered_by,
    }
    rows = (load_history(report.environment).raw + [row])[-HISTORY_LIMIT:]
    create_table_artifact(key=history_key(report.environment), table=rows,
                          description=f"Release history of {report.environment}, newest last")
