"""Whether a migration has a down step is asked of the image's own Node.js, never
guessed from the file's text: each way of writing one, a comment that only mentions
down(), a module that does not load, and an image with no Node.js at all."""

import docker
import pytest

from smartrelease.sandbox.app_changes import STYLES, migration
from smartrelease.sandbox.base_image import DEFAULT_BASE_IMAGE, ensure_base_image
from smartrelease.adapters.images import build_image
from smartrelease.tasks.migrations import down_steps

pytestmark = pytest.mark.e2e
DIR = "/app/migrations"


def image_with(tmp_path, files: dict[str, str], base: str) -> str:
    (tmp_path / "migrations").mkdir()
    for name, text in files.items():
        (tmp_path / "migrations" / name).write_text(text)
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nCOPY migrations/ {DIR}/\n")
    tag = f"smartrelease-test/probe:{tmp_path.name.lower()}"
    build_image(docker.from_env(), tmp_path, tag)
    return tag


def test_the_images_node_says_which_migrations_export_down(tmp_path):
    client = docker.from_env()
    ensure_base_image(client, lambda _: None)
    files = {f"{i}-{style}.js": migration("SELECT 1", "SELECT 2", style=style) for i, style in enumerate(STYLES)}
    files["7-irreversible.js"] = migration("SELECT 1")  # its comment mentions down(); it exports none
    files["8-irreversible-esm.js"] = migration("SELECT 1", style="esm")
    files["9-broken.js"] = "module.exports = { up: async () => {, };\n"
    tag = image_with(tmp_path, files, DEFAULT_BASE_IMAGE)
    try:
        found = down_steps(client, tag, DIR, sorted(files))
    finally:
        client.images.remove(tag, force=True)
    assert found.has == {**{f"{i}-{style}.js": True for i, style in enumerate(STYLES)},
                         "7-irreversible.js": False, "8-irreversible-esm.js": False, "9-broken.js": None}
    assert "there is no down()" in files["7-irreversible.js"]
    assert found.without() == ["7-irreversible.js", "8-irreversible-esm.js"] and found.unknown() == ["9-broken.js"]
    assert found.unknown_why.startswith("node could not load 9-broken.js: ")


def test_an_image_without_node_leaves_every_answer_unknown(tmp_path):
    client = docker.from_env()
    tag = image_with(tmp_path, {"1-create.js": migration("SELECT 1", "SELECT 2")}, "scratch")
    try:
        found = down_steps(client, tag, DIR, ["1-create.js"])
    finally:
        client.images.remove(tag, force=True)
    assert found.has == {"1-create.js": None} and found.without() == []
    assert found.unknown_why.startswith("the image cannot run node: ")
