"""The one report type: a named list of step results, rendered as JSON or markdown."""

from enum import StrEnum

from pydantic import BaseModel, Field


class Status(StrEnum):
    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"


class Finding(BaseModel):
    """What a passing check found; `warning` makes it a warning."""

    detail: str
    warning: bool = False


class StepResult(BaseModel):
    name: str
    status: Status
    detail: str
    duration_ms: float = Field(ge=0)


class Report(BaseModel):
    flow: str
    environment: str
    results: list[StepResult]

    @property
    def ok(self) -> bool:
        return all(r.status != Status.FAILED for r in self.results)

    def failures(self) -> list[StepResult]:
        return [r for r in self.results if r.status == Status.FAILED]

    def markdown(self) -> str:
        icon = {Status.PASSED: "✅", Status.WARNING: "⚠️", Status.FAILED: "❌"}
        verdict = "passed" if self.ok else f"FAILED ({len(self.failures())} failed)"
        lines = [
            f"# {self.flow} — {self.environment}: {verdict}",
            "",
            "| step | status | detail | ms |",
            "|---|---|---|---:|",
        ]
        for r in self.results:
            detail = r.detail.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r.name} | {icon[r.status]} {r.status.value} | {detail} | {r.duration_ms:.0f} |")
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """Plain text for a terminal."""
        width = max((len(r.name) for r in self.results), default=0)
        lines = [f"{self.flow} [{self.environment}]"]
        for r in self.results:
            lines.append(f"  {r.status.value.upper():8} {r.name:{width}}  {r.detail}  ({r.duration_ms:.0f} ms)")
        lines.append("OK" if self.ok else f"FAILED: {', '.join(r.name for r in self.failures())}")
        return "\n".join(lines)
