"""The one report type: a named list of step results, with the release's facts
when it is a release, rendered as JSON, markdown (artifacts) or plain text."""

from enum import StrEnum

from pydantic import BaseModel, Field


class Status(StrEnum):
    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run because an earlier step failed
    WAITING = "waiting"  # progress only: a step waiting for a person (an approval)


class Finding(BaseModel):
    """What a passing check found; `warning` makes it a warning."""

    detail: str
    warning: bool = False


class StepResult(BaseModel):
    name: str
    status: Status
    detail: str
    duration_ms: float = Field(ge=0)

    def progress_line(self, width: int = 26, detail_chars: int = 160) -> str:
        """One line as the step finishes, for a terminal watching the run."""
        first = self.detail.partition("\n")[0]
        first = first if len(first) <= detail_chars else first[: detail_chars - 1] + "…"
        return f"{self.status.value.upper():8} {self.name:{width}} {first}  ({self.duration_ms:.0f} ms)"


class RollbackFacts(BaseModel):
    """What a rollback (automatic, or the rollback flow) did and left to a human."""

    to_version: str | None = None
    images: dict[str, str] = {}  # service -> repository@digest brought back
    db_strategy: str = "undo"
    migrations_undone: list[str] = []
    migrations_left: list[str] = []  # applied since the target and still applied after the rollback
    schema_left: list[str] = []  # how the schema still differs from before the release ("+ line", "- line")
    backup: str | None = None  # the backup restored, or the safety backup taken before an undo
    recovered: bool = False  # the previous version runs and verified
    time_to_recover_s: float | None = None  # failure detected -> previous version verified
    warnings: list[str] = []
    instructions: list[str] = []  # what a human must do next


class PromotionFacts(BaseModel):
    """Where a promoted digest came from and who vouched for it, for an auditor."""

    from_tag: str
    from_environment: str
    evidence: str | None = None  # the passing dev run: "<flow run name> (<id>), finished <time>"
    forced_reason: str | None = None  # --force --reason: promoted without evidence, and why
    at: str = ""  # when, UTC


class ApprovalFacts(BaseModel):
    """Who let a release go ahead (or stopped it), and why: for an auditor."""

    decision: str  # APPROVED, REJECTED, TIMED_OUT or CANCELLED
    approver: str = ""  # the name given with the answer (Prefect's open-source server records no account)
    reason: str = ""
    asked_at: str = ""  # UTC
    answered_at: str = ""  # UTC; empty when nobody answered
    refused: list[str] = []  # answers refused before this one (self-approval), "<approver>: why"

    def line(self) -> str:
        said = f"{self.decision} by {self.approver}" if self.approver else self.decision
        said += f": {self.reason}" if self.reason else ""
        when = f" at {self.answered_at}" if self.answered_at else f" (asked at {self.asked_at})"
        refused = "".join(f"; refused {r}" for r in self.refused)
        return (said + when + refused).replace("|", "/").replace("\n", " ")


APPROVED, REJECTED, TIMED_OUT, CANCELLED = "approved", "rejected", "timed out", "cancelled"


class DrillFacts(BaseModel):
    """What a restore drill proved about the newest backup: how much would be lost
    (RPO), how long a restore takes (RTO), what the backup holds."""

    backup: str | None = None  # file name in BACKUP_DIR
    backup_format: str | None = None
    backup_bytes: int | None = None
    backup_age_s: float | None = None  # RPO of a restore from the backup alone
    wal_age_s: float | None = None  # age of the newest archived WAL segment: RPO with WAL replay
    restore_s: float | None = None  # RTO: the restore into the scratch database
    released_version: str | None = None  # what the history says ran when the backup was taken
    migrations: list[str] = []  # the backup's migrations table
    tables: dict[str, int] = {}  # schema.table -> rows
    schema_fingerprint: str | None = None

    def lines(self) -> list[tuple[str, str]]:
        def age(s: float | None) -> str:
            return "—" if s is None else f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"
        return [
            ("backup", f"{self.backup or '—'} ({self.backup_format or '?'}, {self.backup_bytes or 0} bytes)"),
            ("RPO, from the backup", age(self.backup_age_s)),
            ("RPO, with archived WAL", age(self.wal_age_s)),
            ("RTO (restore)", "—" if self.restore_s is None else f"{self.restore_s:.1f} s"),
            ("running when it was taken", self.released_version or "— (not in the history)"),
            ("migrations", f"{len(self.migrations)}" + (f", newest {self.migrations[-1]}" if self.migrations else "")),
            ("schema fingerprint", f"`{self.schema_fingerprint}`" if self.schema_fingerprint else "—"),
            ("tables", ", ".join(f"{t} {n}" for t, n in self.tables.items()) or "—"),
        ]


class ReleaseFacts(BaseModel):
    """What a release (or a verification) was about, for the report and the history."""

    version: str | None = None
    previous_version: str | None = None
    digests: dict[str, str] = {}  # image repository -> digest
    git_sha: str | None = None
    migrations_applied: list[str] = []
    triggered_by: str = ""
    tool_version: str = ""
    backup: str | None = None  # the pre-release backup (file name in BACKUP_DIR)
    backup_sha256: str | None = None  # its SHA-256 when it was taken: a restore checks the file against it
    rollback: RollbackFacts | None = None
    promotion: PromotionFacts | None = None
    approval: ApprovalFacts | None = None
    drill: DrillFacts | None = None


class Report(BaseModel):
    flow: str
    environment: str
    results: list[StepResult]
    facts: ReleaseFacts | None = None

    @property
    def ok(self) -> bool:
        return all(r.status not in (Status.FAILED, Status.SKIPPED) for r in self.results)

    def failures(self) -> list[StepResult]:
        return [r for r in self.results if r.status == Status.FAILED]

    def release_json(self) -> dict:
        """The CLI's JSON for release and verify runs."""
        facts = self.facts or ReleaseFacts()
        return {
            "ok": self.ok,
            "version": facts.version,
            "previous_version": facts.previous_version,
            "digests": facts.digests,
            "git_sha": facts.git_sha,
            "migrations_applied": facts.migrations_applied,
            "backup": facts.backup,
            "rollback": facts.rollback.model_dump(mode="json") if facts.rollback else None,
            **({"promotion": facts.promotion.model_dump(mode="json")} if facts.promotion else {}),
            **({"approval": facts.approval.model_dump(mode="json")} if facts.approval else {}),
            **({"drill": facts.drill.model_dump(mode="json")} if facts.drill else {}),
            "steps": [r.model_dump(mode="json") for r in self.results],
        }

    def markdown(self) -> str:
        # Words, not emoji: a browser without an emoji font shows emoji as empty boxes.
        shown = {Status.PASSED: "passed", Status.WARNING: "**warning**", Status.FAILED: "**FAILED**", Status.SKIPPED: "skipped", Status.WAITING: "waiting"}
        verdict = "passed" if self.ok else f"FAILED ({', '.join(r.name for r in self.failures())})"
        title = f"{self.flow} {self.facts.version} — {self.environment}" if self.facts and self.facts.version else f"{self.flow} — {self.environment}"
        lines = [f"# {title}: {verdict}", ""]
        if self.facts and (d := self.facts.drill):
            lines += ["| | |", "|---|---|", *(f"| {k} | {v.replace('|', '/')} |" for k, v in d.lines()),
                      f"| triggered by | {self.facts.triggered_by} |", f"| smartrelease | {self.facts.tool_version} |", ""]
        elif f := self.facts:
            lines += [
                "| | |", "|---|---|",
                f"| version | {f.version or '—'} |",
                f"| previous version | {f.previous_version or '— (first release)'} |",
                *(f"| digest | `{repo}@{digest}` |" for repo, digest in f.digests.items()),
                f"| git SHA | `{f.git_sha or '—'}` |",
                f"| migrations applied | {', '.join(f.migrations_applied) or 'none'} |",
                f"| pre-release backup | {f.backup or '—'} |",
                f"| triggered by | {f.triggered_by} |",
                *([f"| approval | {f.approval.line()} |"] if f.approval else []),
                f"| smartrelease | {f.tool_version} |",
                "",
            ]
            if pr := f.promotion:
                lines += [
                    f"## Promotion of {pr.from_tag} from {pr.from_environment}", "",
                    "| | |", "|---|---|",
                    f"| vouched for by | {pr.evidence or '— (none)'} |",
                    f"| promoted at | {pr.at} |",
                    f"| forced | {('yes: ' + pr.forced_reason) if pr.forced_reason else 'no'} |",
                    "",
                ]
            if rb := f.rollback:
                lines += [
                    f"## Rollback to {rb.to_version}: {'recovered' if rb.recovered else '**NOT recovered**'}", "",
                    "| | |", "|---|---|",
                    f"| database strategy | {rb.db_strategy} |",
                    f"| migrations undone | {', '.join(rb.migrations_undone) or 'none'} |",
                    f"| backup | {rb.backup or '—'} |",
                    *(f"| image | `{ref}` |" for ref in rb.images.values()),
                    f"| time to recover | {f'{rb.time_to_recover_s:.1f} s' if rb.time_to_recover_s is not None else '—'} |",
                    "",
                    *(f"**Warning:** {w}\n" for w in rb.warnings),
                    *(["**What to do now:**", "", *(f"{i}. {text}" for i, text in enumerate(rb.instructions, 1)), ""]
                      if rb.instructions else []),
                ]
        lines += ["| step | status | detail | ms |", "|---|---|---|---:|"]
        long = []
        for r in self.results:
            first, _, rest = r.detail.partition("\n")
            first = first.replace("|", "\\|")
            lines.append(f"| {r.name} | {shown[r.status]} | {first} | {r.duration_ms:.0f} |")
            if rest:
                long.append(f"**{r.name}**\n\n```\n{rest}\n```")
        return "\n".join(lines + [""] + long) + "\n"

    def text(self) -> str:
        """Plain text for a terminal."""
        width = max((len(r.name) for r in self.results), default=0)
        lines = [f"{self.flow} [{self.environment}]"]
        if self.facts and (d := self.facts.drill):
            lines += [f"  {k}: {v.strip('`')}" for k, v in d.lines()]
        elif f := self.facts:
            facts = [f"version {f.version or '?'}"]
            if self.flow == "release":
                facts += [f"previous {f.previous_version or 'none'}",
                          f"migrations applied: {', '.join(f.migrations_applied) or 'none'}"]
            if f.git_sha:
                facts.append(f"git {f.git_sha[:12]}")
            lines.append("  " + ", ".join(facts))
            lines += [f"  {repo}@{digest}" for repo, digest in f.digests.items()]
            if f.backup:
                lines.append(f"  pre-release backup {f.backup}")
            if f.approval:
                lines.append(f"  approval: {f.approval.line()}")
            if pr := f.promotion:
                lines.append(f"  promoted from {pr.from_environment} {pr.from_tag}; vouched for by {pr.evidence or 'nothing'}"
                             + (f"; FORCED: {pr.forced_reason}" if pr.forced_reason else ""))
        for r in self.results:
            detail = r.detail.replace("\n", "\n" + " " * (width + 13))
            lines.append(f"  {r.status.value.upper():8} {r.name:{width}}  {detail}  ({r.duration_ms:.0f} ms)")
        if self.facts and (rb := self.facts.rollback):
            ttr = f", time to recover {rb.time_to_recover_s:.1f} s" if rb.time_to_recover_s is not None else ""
            lines.append(f"rollback to {rb.to_version}: {'recovered' if rb.recovered else 'NOT recovered'}"
                         f" (database: {rb.db_strategy}, undone: {', '.join(rb.migrations_undone) or 'none'}{ttr})")
            lines += [f"  WARNING: {w}" for w in rb.warnings]
            lines += [f"  {i}. {text}" for i, text in enumerate(rb.instructions, 1)]
        lines.append("OK" if self.ok else f"FAILED: {', '.join(r.name for r in self.failures())}")
        return "\n".join(lines)
