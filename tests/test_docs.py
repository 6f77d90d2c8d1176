"""The documentation (README.md and docs/) documents every setting the code reads,
and its links lead somewhere."""

import re
from pathlib import Path

from smartrelease.blocks.envfile import app_keys, release_keys

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))


def documentation() -> str:
    return "".join(p.read_text() for p in [README, *DOCS])


def test_docs_configuration_documents_every_key():
    text = (REPO / "docs" / "configuration.md").read_text()
    missing = [k for k in app_keys() + release_keys() if f"`{k}`" not in text]
    assert missing == []


def test_the_docs_document_every_sandbox_and_server_variable():
    text = documentation()
    code = "".join(p.read_text() for p in [*(REPO / "sandbox").glob("*.py"), REPO / "deployments" / "server.py"])
    variables = set(re.findall(r'"((?:SANDBOX|SMARTRELEASE)_[A-Z_]+)"', code)) | {
        f"SANDBOX_{k}_PORT" for k in ("PG", "REGISTRY", "EDGE", "DEV_EDGE")}
    variables -= {"SANDBOX_DB_PASSWORD", "SANDBOX_DATABASE", "SANDBOX_APP"}  # written into .env.sandbox, not settings
    assert sorted(v for v in variables if f"`{v}`" not in text) == []


def test_every_link_to_a_file_of_this_repository_leads_somewhere():
    broken = []
    for page in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []


def test_every_link_to_a_section_names_one_that_exists():
    def anchors(page: Path) -> set[str]:
        return {re.sub(r"[^\w\- ]", "", h.lstrip("#").strip().lower()).replace(" ", "-")
                for h in page.read_text().splitlines() if h.startswith("#")}

    broken = []
    for page in [README, *DOCS]:
        for target, anchor in re.findall(r"\]\(([^)#:]*)#([^)]+)\)", page.read_text()):
            if anchor not in anchors(page.parent / target if target else page):
                broken.append(f"{page.relative_to(REPO)} -> {target}#{anchor}")
    assert broken == []


def test_the_readme_is_a_first_screen_and_the_reference_is_in_docs():
    text = README.read_text()
    assert len(text.encode()) < 12_000
    assert "make demo" in text and "make test" in text
    linked = set(re.findall(r"\]\(docs/([^)#]+)\)", text))
    assert {p.name for p in DOCS if not p.name.startswith("benchmarks-")} - {"zero-downtime.md"} <= linked
