"""Bad input, by property (hypothesis): whatever an env file, a version or tag, the
version endpoint, a registry or the history holds, the answer is a result or a named
one-line error, never a traceback and never a secret echoed. The registry answers
over real HTTP, from a server on this machine, with what hypothesis makes up."""

import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from smartrelease.blocks.envfile import parse_env_file
from smartrelease.record.history import checked_rows
from smartrelease.errors import ConfigError
from smartrelease.refs import (ImageRef, check_dev_tag, check_digest, check_environment_name, check_registry,
                               check_repository, check_tag, check_version)
from smartrelease.adapters.registry import Registry, RegistryError
from smartrelease.adapters.registry_auth import parse_challenge
from smartrelease.tasks.verify import version_problems

MAX_ERROR = 600  # characters: an error names the cause, it does not repeat the input
SECRET_MARK = "Sk7q"  # every generated secret starts so: an echo of one is unmistakable

# Printable text without line breaks, as a value on one line of a file could be.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
line_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=LINE_BREAKS), max_size=60)
# Generated long enough, not filtered to length: a filter that rejects most draws
# fails Hypothesis's health check at random (filter_too_much).
secrets = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=LINE_BREAKS + " "),
                  min_size=8, max_size=56).map(lambda s: SECRET_MARK + s)


def assert_one_line(message: str, *secret: str) -> None:
    assert message and "\n" not in message and len(message) <= MAX_ERROR, message
    for s in secret:
        assert s not in message, f"a secret was echoed: {message}"


# --- the env-file parser ----------------------------------------------------

VALID = {
    "NODE_ENV": "production", "DATABASE_URL": "postgresql://app:pw-Sk7qdburlpass@db:5432/app",
    "FRONTEND_URL": "https://app.example.test", "CLIENT_URL": "https://app.example.test",
    "CORS_ORIGIN": "https://app.example.test", "ALLOW_PROD_MIGRATIONS": "false",
    "BACKUP_DIR": "/var/backups/app", "WAL_ARCHIVE_DIR": "/var/wal",
    "METRICS_BASIC_AUTH_USER": "metrics", "RELEASE_PUBLIC_URL": "https://app.example.test",
}
keys = st.sampled_from(["NODE_ENV", "DATABASE_URL", "RELEASE_PUBLIC_URL", "RELEASE_READY_TIMEOUT_S", "RELEASE_REGISTRY",
                        "RELEASE_BACKEND_IMAGE", "RELEASE_APPROVAL", "RELEASE_DRAIN_FILE", "RELEASE_SMOKE_PATHS",
                        "RELEASE_PRODUCTION", "RELEASE_TLS_WARN_DAYS", "RELEASE_UNKNOWN_THING", "RELEASE_REGISTRY_USERNAME",
                        "OTHER_KEY", "CORS_ORIGIN"])


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "") + "'"


lines = st.one_of(
    st.tuples(keys, line_text).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(keys, line_text).map(lambda kv: f"{kv[0]}={_quoted(kv[1])}"),
    line_text,  # anything at all on a line
    st.tuples(keys, line_text).map(lambda kv: f"{kv[0]}: {kv[1]}"),  # a ':' where '=' belongs
    st.just("# a comment"), st.just(""), st.just('JUNK="unclosed'),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, max_size=12), secrets, secrets, st.booleans())
def test_any_env_file_gives_an_environment_or_a_one_line_error_without_its_secrets(extra, jwt, passphrase, stray):
    body = [f"{k}={v}" for k, v in VALID.items()] + [f"JWT_SECRET={_quoted(jwt)}", f"BACKUP_PASSPHRASE={_quoted(passphrase)}"]
    if stray:
        body.append(passphrase.replace("'", ""))  # a secret pasted on a line of its own, without its key
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ".env.prop"
        path.write_text("\n".join(body + extra) + "\n")
        try:
            env = parse_env_file(path)
        except ConfigError as exc:
            assert_one_line(str(exc), jwt.replace("'", ""), passphrase.replace("'", ""))
        else:
            assert env.name == "prop" and env.app.jwt_secret is not None


# --- versions, tags and references ------------------------------------------

any_text = st.one_of(st.text(max_size=300), st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}([-+][ -~]{0,400})?", fullmatch=True))


@settings(max_examples=400, deadline=None)
@given(any_text, st.sampled_from([check_version, check_tag, check_dev_tag, check_repository, check_digest,
                                  check_registry, check_environment_name, ImageRef.parse]))
def test_any_version_tag_or_reference_is_accepted_whole_or_refused_in_one_line(text, check):
    try:
        result = check(text)
    except ConfigError as exc:
        assert_one_line(str(exc))
    else:
        assert str(result) == text or isinstance(result, ImageRef)


# --- the version endpoint's JSON --------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=2000),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["version", "gitSha", "buildTime", "environment", "other"]), json_values))
def test_any_version_answer_gives_one_bounded_line_per_wrong_key(found):
    expected = {"version": ("1.2.3", "the released version"), "gitSha": ("abc123", "the revision label"),
                "buildTime": ("2026-01-01T00:00:00Z", "the created label"), "environment": ("production", "NODE_ENV")}
    problems = version_problems(found, expected)
    assert len(problems) == sum(found.get(k) != v for k, (v, _) in expected.items())
    for line in problems:
        assert_one_line(line)


# --- registry answers, over real HTTP ----------------------------------------

REGISTRY_PASSWORD = "Sk7q-registry-password-SENTINEL"


class _Answers(BaseHTTPRequestHandler):
    answer: dict = {}

    def _reply(self):
        a = type(self).answer
        if self.path.startswith("/token"):
            status, body, headers = a.get("token_status", 200), a.get("token_body", b""), {}
        elif "/blobs/" in self.path:
            status, body, headers = a.get("blob_status", 200), a.get("blob_body", b""), {}
        else:
            status, body, headers = a["status"], a["body"], a["headers"]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = _reply

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def answering_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120)
DIGEST_OK = "sha256:" + "a" * 64
manifests = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.fixed_dictionaries({"mediaType": st.sampled_from(["application/vnd.oci.image.manifest.v1+json",
                                                          "application/vnd.oci.image.index.v1+json", "text/plain"]) | json_values,
                           "config": json_values | st.fixed_dictionaries({"digest": st.just(DIGEST_OK) | st.text(max_size=20)}),
                           "manifests": json_values | st.lists(st.fixed_dictionaries({
                               "digest": st.just(DIGEST_OK) | json_values,
                               "platform": st.just({"os": "linux", "architecture": "amd64"}) | json_values}), max_size=3)},
                          ).map(lambda m: json.dumps(m).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Found by a local run: a media type that is a long JSON object made a 602-character error.
@example(status=200, body=json.dumps({"mediaType": {"k" * 40: ["v" * 200, {"x": "y" * 300}]}}).encode(),
         digest_header=None, challenge=None, token_status=200, token_body=b"null", blob_body=b"null", content_type="")
@given(status=st.sampled_from([200, 200, 200, 401, 404, 500, 302]), body=manifests,
       digest_header=st.none() | st.just(DIGEST_OK) | header_text,
       challenge=st.none() | header_text | st.builds(lambda extra: f'Bearer realm="{{realm}}",service="reg"{extra}', header_text),
       token_status=st.sampled_from([200, 401, 500]), token_body=json_values.map(lambda v: json.dumps(v).encode()),
       blob_body=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=50),
       content_type=header_text)
def test_any_registry_answer_gives_a_result_or_a_one_line_error_without_the_password(
        answering_registry, status, body, digest_header, challenge, token_status, token_body, blob_body, content_type):
    headers = {"Content-Type": content_type}
    if digest_header is not None:
        headers["Docker-Content-Digest"] = digest_header
    if challenge is not None and status == 401:
        headers["WWW-Authenticate"] = challenge.replace("{realm}", f"http://{answering_registry}/token")
    _Answers.answer = {"status": status, "body": body, "headers": headers, "token_status": token_status,
                       "token_body": token_body, "blob_body": blob_body}
    with Registry(answering_registry, username="ci", password=REGISTRY_PASSWORD, timeout_s=5) as registry:
        for ask in (lambda: registry.digest("team/backend", "1.2.3"), lambda: registry.labels("team/backend", DIGEST_OK)):
            try:
                result = ask()
            except RegistryError as exc:
                assert_one_line(str(exc), REGISTRY_PASSWORD)
            else:
                assert result is None or isinstance(result, (str, dict))
                if isinstance(result, str):
                    assert result.startswith("sha256:") and len(result) == 71


@given(header_text)
def test_any_challenge_header_parses(header):
    scheme, params = parse_challenge(header)
    assert isinstance(scheme, str) and all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


# --- history rows -----------------------------------------------------------

rows = st.one_of(json_values, st.fixed_dictionaries({"version": json_values | st.text(max_size=10),
                                                     "result": json_values | st.just("released")},
                                                    optional={"backend": json_values, "frontend": json_values,
                                                              "finished": json_values}))


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, max_size=8))
def test_any_history_rows_are_kept_or_skipped_by_number_never_quoted(raw):
    good, skipped = checked_rows(raw)
    assert len(good) + len(skipped) == len(raw)
    for number_and_why in skipped:
        assert_one_line(number_and_why)
        assert number_and_why.startswith("row ") and len(number_and_why) <= 200
    for row in good:
        assert isinstance(row["version"], str) and row["version"] and isinstance(row["result"], str)
