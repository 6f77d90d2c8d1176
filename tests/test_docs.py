"""The README documents every setting the code reads."""

import re
from pathlib import Path

from blocks.envfile import app_keys, release_keys

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_documents_every_key():
    text = README.read_text()
    missing = [k for k in app_keys() + release_keys() if f"`{k}`" not in text]
    assert missing == []


def test_readme_documents_every_sandbox_variable():
    text = README.read_text()
    code = "".join(p.read_text() for p in (README.parent / "sandbox").glob("*.py"))
    variables = set(re.findall(r'"((?:SANDBOX|SMARTRELEASE)_[A-Z_]+)"', code)) | {
        f"SANDBOX_{k}_PORT" for k in ("PG", "REGISTRY", "EDGE", "DEV_EDGE")}
    variables -= {"SANDBOX_DB_PASSWORD", "SANDBOX_DATABASE", "SANDBOX_APP"}  # written into .env.sandbox, not settings
    assert sorted(v for v in variables if f"`{v}`" not in text) == []


def test_the_readmes_links_to_files_of_this_repository_lead_somewhere():
    text = README.read_text()
    targets = re.findall(r"\]\(((?:docs|benchmarks|deployments|tests)/[^)#]+)\)", text)
    assert targets  # the screenshots and benchmark figures at least
    assert [t for t in targets if not (README.parent / t).is_file()] == []
