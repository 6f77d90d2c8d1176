"""Pure logic: no services needed."""

import logging
import uuid

import httpx
import pytest
from hypothesis import given, strategies as st

from smartrelease.adapters.images import references
from smartrelease.adapters.prefect_api import quiet_exit_notices, quiet_task_notices
from smartrelease.blocks.envfile import name_from_env_file, parse_env_file
from smartrelease.errors import ConfigError
from smartrelease.redact import Masker
from smartrelease.refs import is_semver, repository_of
from smartrelease.tasks.routes import is_page
from smartrelease.tasks.wal_archive import waiting_segments

SEG = 16 * 1024 * 1024


@pytest.mark.parametrize("v", ["1.0.0", "0.1.0", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5", "1.0.0-alpha.beta+exp.sha.5114f85"])
def test_semver_accepts(v):
    assert is_semver(v)


@pytest.mark.parametrize("v", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "latest", "", "1.0.0 "])
def test_semver_rejects(v):
    assert not is_semver(v)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_semver_any_triple(a, b, c):
    assert is_semver(f"{a}.{b}.{c}")


def test_masker_masks_longest_first():
    m = Masker(["abcd1234", "abcd1234-longer"])
    assert m("x abcd1234-longer y abcd1234") == "x *** y ***"


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="*"), min_size=1, max_size=40))
def test_masker_never_leaves_a_secret(secret):
    # Any length (a short secret is refused by the environment check, never left
    # unmasked), as it is and in the forms JSON, repr() and a URL give it.
    import json
    from urllib.parse import quote

    masked = Masker([secret])(f"before {secret} after {json.dumps(secret)} {secret!r} {quote(secret, safe='')}")
    for form in (secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret, safe="")):
        assert form not in masked


@pytest.mark.parametrize("file,name", [(".env.prod", "prod"), ("prod.env", "prod"), (".env", "default"), (".env.Dev_1", "dev-1")])
def test_environment_name_from_file(tmp_path, file, name):
    assert name_from_env_file(tmp_path / file) == name


def test_waiting_segments():
    assert waiting_segments("000000010000000000000005", "000000010000000000000004", SEG) == 0
    assert waiting_segments("000000010000000000000009", "000000010000000000000004", SEG) == 4
    # Crossing a log file boundary: 256 segments of 16 MB per log.
    assert waiting_segments("000000010000000100000000", "0000000100000000000000FF", SEG) == 0
    assert waiting_segments("000000020000000000000005", "000000010000000000000004", SEG) is None


def test_env_file_missing_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="env file not found"):
        parse_env_file(tmp_path / "nope.env")


def test_unknown_release_key_is_refused(tmp_path):
    path = tmp_path / ".env.x"
    path.write_text("RELEASE_PUBLIK_URL=https://x\n")
    with pytest.raises(ConfigError, match="unknown setting RELEASE_PUBLIK_URL"):
        parse_env_file(path)


def test_bad_number_names_the_key_not_the_value(tmp_path):
    path = tmp_path / ".env.x"
    path.write_text("RELEASE_BACKUP_MAX_AGE_HOURS=soon\nJWT_SECRET=do-not-echo-me\n")
    with pytest.raises(ConfigError, match="RELEASE_BACKUP_MAX_AGE_HOURS") as exc:
        parse_env_file(path)
    assert "soon" not in str(exc.value) and "do-not-echo-me" not in str(exc.value)


@pytest.mark.parametrize("block_type", ["AppEnvironment", "ReleaseTarget", "RegistryCredentials"])
def test_a_block_builds_its_json_schema_once_however_often_it_is_saved(block_type, monkeypatch):
    """Prefect's Block.save asks for the class's JSON schema once per field it dumps
    (`_field_has_secrets`): 0.6 s of CPU per save of the 50-field ReleaseTarget. Our
    blocks build it once; each caller gets a copy of its own, equal to Prefect's."""
    import pydantic

    from smartrelease import blocks
    from smartrelease.blocks.registry_credentials import RegistryCredentials

    cls = {"RegistryCredentials": RegistryCredentials}.get(block_type) or getattr(blocks, block_type)
    fields = {"RegistryCredentials": {"registry_url": "localhost:5000", "username": "u", "password": "p-SENTINEL"}}.get(block_type, {})
    built = []
    original = pydantic.BaseModel.model_json_schema.__func__
    monkeypatch.setattr(pydantic.BaseModel, "model_json_schema",
                        classmethod(lambda c, *a, **k: built.append(c) or original(c, *a, **k)))
    for _ in range(3):
        cls(**fields)._to_block_document(name="x", block_schema_id=uuid.uuid4(), block_type_id=uuid.uuid4())
    assert len(built) <= 1, f"{block_type}'s JSON schema was built {len(built)} times for three saves"
    first = cls.model_json_schema()
    first["properties"].clear()  # a caller's change stays its own
    assert cls.model_json_schema()["properties"] and cls.model_json_schema() == uncached_schema(cls)


def uncached_schema(cls) -> dict:
    """Prefect's Block.model_json_schema itself, bypassing any cache of ours."""
    from prefect.blocks.core import Block

    return Block.model_json_schema.__func__(cls)


def test_a_trust_store_is_loaded_once_until_its_file_changes(tmp_path):
    """Loading a trust store costs about 20 ms of CPU and a run makes hundreds of
    clients: one context per store, loaded again when the file is replaced."""
    import trustme

    from smartrelease.adapters.http import ssl_context

    assert ssl_context(None) is ssl_context(None)
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    first = ssl_context(str(bundle))
    assert ssl_context(str(bundle)) is first and first is not ssl_context(None)
    replacement = tmp_path / "new.pem"
    trustme.CA().cert_pem.write_to_path(str(replacement))
    replacement.replace(bundle)  # a renewed CA written over the old one
    renewed = ssl_context(str(bundle))
    assert renewed is not first and len(renewed.get_ca_certs()) == 1
    bundle.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="is not a PEM certificate file"):
        ssl_context(str(bundle))
    bundle.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        ssl_context(str(bundle))


@pytest.mark.parametrize("reference, repository", [
    ("127.0.0.1:5001/smartaccounting/backend:1.2.0", "127.0.0.1:5001/smartaccounting/backend"),
    ("127.0.0.1:5001/smartaccounting/backend@sha256:" + "a" * 64, "127.0.0.1:5001/smartaccounting/backend"),
    ("smartrelease-sandbox/base:trixie", "smartrelease-sandbox/base"),
])
def test_the_repository_of_a_tag_or_a_digest_reference_keeps_the_registrys_port(reference, repository):
    assert repository_of(reference) == repository


@pytest.mark.parametrize("content_type, page", [("text/html; charset=utf-8", True), ("TEXT/HTML", True),
                                                ("application/json", False), ("text/plain", False), (None, False)])
def test_a_single_page_apps_answer_is_told_from_the_backends_by_its_content_type(content_type, page):
    headers = {"content-type": content_type} if content_type else {}
    assert is_page(httpx.Response(200, headers=headers)) is page


def test_image_references_are_read_from_engines_list_by_repository_prefix():
    listing = [{"RepoTags": ["127.0.0.1:5000/app/backend:1.0", "other/x:1"], "RepoDigests": ["127.0.0.1:5000/app/backend@sha256:ab"]},
               {"RepoTags": ["<none>:<none>"], "RepoDigests": ["<none>@<none>"]},
               {"RepoTags": None, "RepoDigests": ["127.0.0.1:5000/app/frontend@sha256:cd"]}]
    assert references(listing, "127.0.0.1:5000/app/") == [
        "127.0.0.1:5000/app/backend:1.0", "127.0.0.1:5000/app/backend@sha256:ab", "127.0.0.1:5000/app/frontend@sha256:cd"]
    assert references(listing, "127.0.0.1:5000/app/", "other/")[1] == "other/x:1"
    assert references(listing, "nothing/") == []


def test_prefects_notices_are_filtered_once_however_often_asked():
    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect._internal.concurrency", "EventsWorker")]
    quiet_task_notices()
    quiet_exit_notices()
    once = [len(logger.filters) for logger in loggers]
    for _ in range(3):  # the lock and each task ask again
        quiet_task_notices()
        quiet_exit_notices()
    assert [len(logger.filters) for logger in loggers] == once
