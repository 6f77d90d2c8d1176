"""Committing new versions of the stand-in app to the sandbox's checkout, as a
developer would: the demo and the end-to-end tests ship versions this way."""

import json
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
    if faults_path.is_file() or faults:  # the stand-in's; another app has none
        header = [line for line in faults_path.read_text().splitlines() if line.startswith("#")]
        faults_path.write_text("\n".join(header + (faults or [])) + "\n")
    git = ["git", "-C", str(app_dir), "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost"]
    run(Command((*git, "add", "-A"), timeout_s=GIT_TIMEOUT_S))
    run(Command((*git, "commit", "-q", "--allow-empty", "-m", f"version {version}"), timeout_s=GIT_TIMEOUT_S))
    return run(Command((*git, "rev-parse", "HEAD"), timeout_s=GIT_TIMEOUT_S)).stdout.strip()


def _body(statements: str | list[str]) -> str:
    """One `await queryInterface.sequelize.query(...)` per statement, in order, outside
    any transaction, as sequelize-cli runs a migration: a later one failing leaves the
    earlier ones applied."""
    statements = [statements] if isinstance(statements, str) else statements
    return "".join(f"    await queryInterface.sequelize.query({json.dumps(s.strip())});\n" for s in statements)


# The ways a Sequelize migration is written; each exports `up` and, with a down step, `down`.
STYLES = ("object", "exports", "module-exports", "esm", "typescript-cjs")


def migration(up: str | list[str], down: str | list[str] | None = None, style: str = "object") -> str:
    """A Sequelize migration file (`migrations/<timestamp>-<name>.js`) running raw SQL.
    Without `down` it has no down step (a comment mentioning down() aside)."""
    up_body = _body(up)
    if down is None:
        note = "// Irreversible: there is no down() for this one.\n"
        if style == "esm":
            return f"{note}export const up = async (queryInterface) => {{\n{up_body}}};\n"
        return f'"use strict";\n{note}module.exports = {{\n  async up(queryInterface) {{\n{up_body}  }},\n}};\n'
    down_body = _body(down)
    if style == "object":
        return (f'"use strict";\n\nmodule.exports = {{\n  async up(queryInterface) {{\n{up_body}  }},\n\n'
                f"  async down(queryInterface) {{\n{down_body}  }},\n}};\n")
    if style == "exports":
        return (f'"use strict";\n\nexports.up = async (queryInterface) => {{\n{up_body}}};\n\n'
                f"exports.down = async (queryInterface) => {{\n{down_body}}};\n")
    if style == "module-exports":
        return (f'"use strict";\n\nmodule.exports.up = async function (queryInterface) {{\n{up_body}}};\n\n'
                f"module.exports.down = async function (queryInterface) {{\n{down_body}}};\n")
    if style == "esm":  # what TypeScript emits with "module": "esnext"
        return (f"export const up = async (queryInterface) => {{\n{up_body}}};\n\n"
                f"export const down = async (queryInterface) => {{\n{down_body}}};\n")
    if style == "typescript-cjs":  # what tsc emits with "module": "commonjs"
        return ('"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\n'
                "exports.down = exports.up = void 0;\n"
                f"const up = async (queryInterface) => {{\n{up_body}}};\nexports.up = up;\n"
                f"const down = async (queryInterface) => {{\n{down_body}}};\nexports.down = down;\n")
    raise ValueError(f"unknown migration style {style!r} (one of {', '.join(STYLES)})")
