"""Committing new versions of the stand-in app to the sandbox's checkout, as a
developer would: the demo and the end-to-end tests ship versions this way."""

from pathlib import Path

from smartrelease.process import Command, run

FAULTS_FILE = "standin-faults"
GIT_TIMEOUT_S = 60


def commit_version(app_dir: Path, version: str, files: dict[str, str | None] | None = None,
                   faults: list[str] | None = None) -> str:
    """Set VERSION, write (or with None delete) `files`, set the image's baked-in
    faults (none by default), commit, and return the new git SHA."""
    app_dir = Path(app_dir)
    (app_dir / "VERSION").write_text(version + "\n")
    for rel, content in (files or {}).items():
        path = app_dir / rel
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    faults_path = app_dir / FAULTS_FILE
    header = [line for line in faults_path.read_text().splitlines() if line.startswith("#")]
    faults_path.write_text("\n".join(header + (faults or [])) + "\n")
    git = ["git", "-C", str(app_dir), "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost"]
    run(Command((*git, "add", "-A"), timeout_s=GIT_TIMEOUT_S))
    run(Command((*git, "commit", "-q", "--allow-empty", "-m", f"version {version}"), timeout_s=GIT_TIMEOUT_S))
    return run(Command((*git, "rev-parse", "HEAD"), timeout_s=GIT_TIMEOUT_S)).stdout.strip()


def migration(up: str, down: str | None = None) -> str:
    """A stand-in migration file's text (`-- down` omitted when there is none)."""
    return f"-- up\n{up.strip()}\n" + (f"-- down\n{down.strip()}\n" if down else "")
