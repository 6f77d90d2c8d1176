"""Pure logic: no services needed."""

import pytest
from hypothesis import given, strategies as st

from blocks.envfile import name_from_env_file, parse_env_file
from smartrelease.errors import ConfigError
from smartrelease.redact import Masker
from smartrelease.refs import is_semver
from tasks.wal_archive import waiting_segments

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
