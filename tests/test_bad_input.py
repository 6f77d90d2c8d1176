"""Bad input, as a user or a registry gives it: a clear one-line error (exit 2 from
the CLI), never a traceback, never a secret echoed, nothing saved or touched.
Each numbered case is one of issue 10's; it failed before its fix."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect.artifacts import create_table_artifact

from smartrelease.blocks import AppEnvironment, ReleaseTarget
from smartrelease.record.history import history_key, load_history
from smartrelease.errors import ConfigError
from smartrelease.refs import check_tag, check_version
from smartrelease.adapters.registry import Registry, RegistryError, manifest_path
from tests.test_cli import smartrelease

SECRET = "typo-SENTINEL-registry-password"


def one_line_exit_2(out) -> str:
    """The CLI's promise for bad input; returns the line."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smartrelease: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def nothing_saved(name: str) -> None:
    for block in (AppEnvironment, ReleaseTarget):
        with pytest.raises(ValueError):
            block.load(name)


# 1. Non-finite numbers are refused before any block is written.
@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-inf"])
def test_a_non_finite_number_is_refused_and_nothing_is_saved(write_env, value):
    path = write_env(name="infinite", RELEASE_BACKUP_MAX_AGE_HOURS=value)
    line = one_line_exit_2(smartrelease("blocks", "import", "--env-file", str(path)))
    assert "RELEASE_BACKUP_MAX_AGE_HOURS: Input should be a finite number" in line
    nothing_saved("infinite")


# 2. An unparsable line is named by its number and key, never its text.
def test_a_colon_typo_names_line_and_key_but_never_the_secret(write_env):
    path = write_env(name="typo")
    path.write_text(path.read_text() + f"RELEASE_REGISTRY_PASSWORD:{SECRET}\n")
    line = one_line_exit_2(smartrelease("preflight", "--env-file", str(path)))
    count = len(path.read_text().splitlines())
    assert f"line {count} RELEASE_REGISTRY_PASSWORD: not KEY=VALUE" in line
    assert SECRET not in line
    nothing_saved("typo")


def test_an_unclosed_quote_is_named_by_line_without_python_dotenvs_own_warning(write_env):
    path = write_env(name="quote")
    path.write_text(f"JWT_SECRET='{SECRET}\n" + path.read_text())
    line = one_line_exit_2(smartrelease("preflight", "--env-file", str(path)))
    assert "line 1 JWT_SECRET: cannot be parsed" in line and SECRET not in line


# 3. Names are matched whole: a trailing newline is not a name.
def test_a_name_with_a_newline_is_refused_everywhere(write_env):
    path = write_env(name="probe")
    line = one_line_exit_2(smartrelease("blocks", "import", "--env-file", str(path), "--name", "probe\n"))
    assert "invalid environment name 'probe\\n'" in line
    nothing_saved("probe")
    one_line_exit_2(smartrelease("guard", "off", "--name", "probe\n"))


class _Registry(BaseHTTPRequestHandler):
    """A registry that answers HEAD without Docker-Content-Digest (the header is
    optional), or with a malformed one, and records every path it is asked for."""

    def log_message(self, *args):
        pass

    def _answer(self, body: bool):
        self.server.paths.append(self.path)
        manifest = self.server.manifest
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
        self.send_header("Content-Length", str(len(manifest)))
        if self.server.digest_header is not None:
            self.send_header("Docker-Content-Digest", self.server.digest_header)
        self.end_headers()
        if body:
            self.wfile.write(manifest)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


@pytest.fixture
def odd_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    server.paths, server.digest_header = [], None
    server.manifest = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "0" * 64}}).encode()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# 4. A registry answering HEAD without the digest header: the digest is the manifest's hash.
def test_a_head_without_docker_content_digest_falls_back_to_the_manifests_hash(odd_registry):
    with Registry(f"127.0.0.1:{odd_registry.server_address[1]}") as registry:
        assert registry.digest("app/backend", "1.0.0") == "sha256:" + hashlib.sha256(odd_registry.manifest).hexdigest()


def test_a_malformed_digest_header_is_a_named_registry_error(odd_registry):
    odd_registry.digest_header = "md5:abc"
    with Registry(f"127.0.0.1:{odd_registry.server_address[1]}") as registry, \
            pytest.raises(RegistryError, match="malformed digest 'md5:abc'"):
        registry.digest("app/backend", "1.0.0")


# 4, 5. Tags by the distribution grammar, checked before any URL is built.
@pytest.mark.parametrize("tag", ["dev-\x01x", "x/../../../../other/repo/manifests/sha256:" + "a" * 64,
                                 "dev-good1#x", "dev-x/../sha256:" + "b" * 64, ".hidden", "a" * 129, "1.0.0\n"])
def test_a_malformed_tag_never_reaches_the_registry(odd_registry, write_env, tag):
    registry = f"127.0.0.1:{odd_registry.server_address[1]}"
    path = write_env(name="tags", RELEASE_REGISTRY=registry, RELEASE_BACKEND_IMAGE="app/backend",
                     RELEASE_FRONTEND_IMAGE="app/frontend")
    line = one_line_exit_2(smartrelease("release", "--env-file", str(path), "--from", tag))
    assert line.startswith("smartrelease: --from ") and "is not an image tag" in line
    promoted = one_line_exit_2(smartrelease("promote", "--env-file", str(path), "--from", tag))
    assert "expected a dev tag" in promoted
    with pytest.raises(ConfigError):
        manifest_path("app/backend", tag)
    assert odd_registry.paths == []  # not one request
    nothing_saved("tags")


# 6. SemVer digits are ASCII; build metadata cannot be a tag.
@pytest.mark.parametrize("version,why", [("1.0.1\u0663", "is not SemVer"), ("1.0.0\n", "is not SemVer"),
                                         ("1.0.0+build.5", "has build metadata (+build.5)")])
def test_a_version_that_cannot_be_a_tag_is_refused_before_anything_is_saved(write_env, version, why):
    path = write_env(name="versions")
    line = one_line_exit_2(smartrelease("release", "--env-file", str(path), "--version", version))
    assert why in line
    nothing_saved("versions")
    assert load_history("versions").raw == []


def test_build_metadata_is_explained():
    with pytest.raises(ConfigError, match=r"release 1.2.0 or a pre-release such as 1.2.0-rc.1"):
        check_version("1.2.0+rc.1")
    assert check_tag("1.2.0-rc.1") == "1.2.0-rc.1"


# 7. Every subcommand with bad arguments: exit 2, one line, no usage block.
@pytest.mark.parametrize("args", [
    [], ["nonsense"], ["--frobnicate"], ["blocks"], ["blocks", "import"], ["preflight"],
    ["preflight", "--env-file", "/nonexistent/.env.x"], ["release", "--env-file"], ["release", "--env-file", "x", "--db-strategy", "drop"],
    ["build"], ["promote", "--env-file", "/nonexistent/.env.x"], ["rollback", "--to"],
    ["guard", "sideways", "--name", "prod"], ["guard", "off"], ["verify", "--env-file", "/nonexistent/.env.x"],
    ["verify", "--env-file", "x", "--expect-version", "one"], ["sandbox"], ["sandbox", "explode"],
    ["approve"], ["approve", "not-a-uuid", "--reason", "ok"], ["approve", "0b6e5f4a-1c2d-4e3f-8a9b-0c1d2e3f4a5b"],
    ["approve", "0b6e5f4a-1c2d-4e3f-8a9b-0c1d2e3f4a5b", "--reason", " "],
])
def test_every_subcommand_with_bad_arguments_is_one_line_exit_2(args):
    one_line_exit_2(smartrelease(*args))


# 8. A malformed history row is named and skipped, never a crash.
def test_malformed_history_rows_are_named_and_skipped(write_env):
    good = {"version": "1.0.0", "result": "released", "backend": "r/b@sha256:" + "1" * 64,
            "frontend": "r/f@sha256:" + "2" * 64}
    create_table_artifact(key=history_key("crooked"), table=[{"version": None, "result": "released"},
                                                            {"result": "released"}, good])
    history = load_history("crooked")
    assert [r["version"] for r in history.rows] == ["1.0.0"]
    assert history.skipped == ["row 1: version: Input should be a valid string", "row 2: version: Field required"]
    path = write_env("crooked")
    line = one_line_exit_2(smartrelease("rollback", "--env-file", str(path), "--to", "0.9.0"))
    assert "--to 0.9.0: not a release of crooked that can be gone back to (1.0.0)" in line

    create_table_artifact(key=history_key("allcrooked"), table=[{"version": None, "result": "released"}])
    line = one_line_exit_2(smartrelease("rollback", "--env-file", str(write_env("allcrooked"))))
    assert "nothing to roll back to (1 malformed history row(s) skipped: row 1: version" in line


# 9. A CA bundle that is not PEM fails in `environment`, and tls does not retry it.
def test_a_ca_bundle_that_is_not_pem_is_a_configuration_error_never_retried(write_env, https_server, tmp_path):
    from tests.test_preflight_flow import run

    bogus = tmp_path / "ca.pem"
    bogus.write_text("this is not a certificate\n")
    from smartrelease.record.lock import import_environment

    import_environment(write_env(name="bogusca", public_url=https_server(), RELEASE_CA_BUNDLE=str(bogus)), "bogusca")
    state, report = run("bogusca")
    by_name = {r.name: r for r in report.results}
    assert f"RELEASE_CA_BUNDLE {bogus} is not a PEM certificate file" in by_name["environment"].detail
    assert f"RELEASE_CA_BUNDLE {bogus} is not a PEM certificate file" in by_name["tls"].detail
    from tests.conftest import stored

    assert stored(state.state_details.flow_run_id)["task_run_counts"]["tls"] == 1


def test_an_undo_command_that_does_not_split_is_refused(write_env):
    path = write_env(name="undo", RELEASE_UNDO_COMMAND="npm run 'db:rollback")
    line = one_line_exit_2(smartrelease("preflight", "--env-file", str(path)))
    assert "RELEASE_UNDO_COMMAND: Value error, does not split into words (No closing quotation)" in line


def test_a_block_left_unloadable_by_an_older_version_is_named_not_mistaken_for_missing(write_env):
    # What issue 10 found saved by `inf`: backup_max_age_hours null in the stored block.
    from smartrelease.blocks import load_environment
    from smartrelease.record.lock import import_environment

    import_environment(write_env(name="oldblock"), "oldblock")
    ReleaseTarget.model_construct(**{**ReleaseTarget.load("oldblock").model_dump(), "backup_max_age_hours": None}) \
        .save("oldblock", overwrite=True)
    with pytest.raises(ConfigError) as exc:
        load_environment("oldblock")
    assert str(exc.value).startswith("blocks 'oldblock' hold an invalid value, RELEASE_BACKUP_MAX_AGE_HOURS: ")
