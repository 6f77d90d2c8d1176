"""Registries as they are: the token flow (Debian's docker-registry with token auth and
a token service of the tests'), an OCI index in place of a manifest, and a release
host that never built the images (every local copy removed first)."""

import json
import shutil
import tempfile
from pathlib import Path

import docker
import pytest

from smartrelease.sandbox.registry import Registry
from smartrelease.refs import api_path, docker_name, same_repository
from smartrelease.tasks.build_pin import LABEL_VERSION, build_pin, registry_for
from smartrelease.adapters.http import is_loopback
from smartrelease.adapters.images import remove_images, repo_digests
from smartrelease.tasks.promote_tag import resolve_tag, tag_digest
from smartrelease.adapters.registry import Registry as RegistryApi, RegistryError, registry_url
from smartrelease.adapters.registry_auth import parse_challenge
from smartrelease.tasks.rollback_inputs import missing_images
from tests.conftest import free_port
from tests.registry_tokens import TokenService
from tests.test_build_pin import checkout, env_for  # noqa: F401 (checkout is a fixture)

from tests.test_build_pin import REGISTRY_USER as USER

PASSWORD = "token-SENTINEL-pass"


@pytest.mark.parametrize("host,loopback", [("localhost", True), ("localhost:5000", True), ("127.0.0.1:5001", True),
                                           ("127.8.9.1", True), ("localhost-reg.corp", False),
                                           ("localhost.example.com:443", False), ("10.0.0.1:5000", False)])
def test_plain_http_only_for_loopback(host, loopback):
    assert is_loopback(host) is loopback
    assert registry_url(host).startswith("http://" if loopback else "https://")


def test_docker_hub_names_are_normalised():
    assert registry_url("docker.io") == "https://registry-1.docker.io"
    assert api_path("docker.io", "postgres") == "library/postgres" and api_path("docker.io", "acme/app") == "acme/app"
    assert docker_name("docker.io/library/postgres") == "postgres" and docker_name("docker.io/acme/app") == "acme/app"
    assert same_repository("docker.io/acme/app", "acme/app")  # RepoDigests carry no docker.io/
    assert not same_repository("127.0.0.1:5001/acme/app", "acme/app")


def test_challenges_parse():
    assert parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"') == (
        "bearer", {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull"})
    assert parse_challenge('Basic realm="smartrelease"') == ("basic", {"realm": "smartrelease"})


@pytest.fixture(scope="module")
def token_registry():
    root = Path(tempfile.mkdtemp(prefix="smartrelease-token-registry-"))
    tokens = TokenService(root, {USER: PASSWORD})
    tokens.start()
    registry = Registry(root / "registry", f"127.0.0.1:{free_port()}", token=tokens.registry_config())
    registry.start()
    yield registry.addr, tokens
    registry.stop()
    tokens.stop()
    remove_images(docker.from_env(), f"{registry.addr}/")
    shutil.rmtree(root, ignore_errors=True)


def test_the_token_service_refusing_is_named(token_registry):
    addr, _ = token_registry
    for password in ("not-the-password", None):
        with RegistryApi(addr, username=USER if password else None, password=password) as api, \
                pytest.raises(RegistryError) as exc:
            api.digest("tok/backend", "1.0.0")
        assert "token service" in str(exc.value) and "answered HTTP 401" in str(exc.value)
        assert "not-the-password" not in str(exc.value)


def remove_local(client: docker.DockerClient, repository: str) -> None:
    """Every local copy of `repository`'s images, as on a host that never built them."""
    for image in client.images.list(name=repository):
        client.images.remove(image.id, force=True)
    assert client.images.list(name=repository) == []


@pytest.mark.e2e
def test_build_pin_promote_and_availability_through_the_token_flow_on_a_host_without_the_images(
        tmp_path, token_registry, checkout):  # noqa: F811 (the fixture imported above)
    addr, tokens = token_registry
    env = env_for(tmp_path, addr, checkout, name="tok", password=PASSWORD)
    first = build_pin(env, "2.0.0")  # docker login, build and push through the token flow
    assert all(i.built for i in first.images.values())

    client = docker.from_env()
    for image in first.images.values():
        remove_local(client, image.repository)
    again = build_pin(env, "2.0.0")  # what a production host does: deployed as pushed, pulled with the login
    assert not any(i.built for i in again.images.values()) and again.digests == first.digests
    assert again.detail.count("pulled") == 2 and again.images["backend"].labels[LABEL_VERSION] == "2.0.0"
    for image in again.images.values():
        assert repo_digests(client, image.ref, image.repository) == {image.digest}

    with registry_for(env) as api:  # promotion's resolve and tag, over the API with tokens
        digest = first.images["backend"].digest
        assert resolve_tag(api, "pin-tok/backend", "2.0.0") == digest
        assert "now names" in tag_digest(api, "pin-tok/backend", digest, "2.0.0-promoted")
        assert api.digest("pin-tok/backend", "2.0.0-promoted") == digest
    assert missing_images(env, [i.ref for i in first.images.values()]) == []  # the rollback's check
    # This tool's own token requests: pull to read, pull and push (in the registry's order) to tag.
    ours = {(s.rsplit(":", 1)[0], frozenset(s.rsplit(":", 1)[1].split(",")))
            for r in tokens.requests if r["account"] is None for s in r["scope"]}
    assert {("repository:pin-tok/backend", frozenset({"pull"})),
            ("repository:pin-tok/backend", frozenset({"pull", "push"}))} <= ours, ours


@pytest.mark.e2e
def test_an_oci_index_is_pinned_by_its_own_digest_and_read_through(tmp_path, token_registry, checkout):  # noqa: F811 (the fixture imported above)
    addr, _ = token_registry
    env = env_for(tmp_path, addr, checkout, name="idx", password=PASSWORD)
    pushed = build_pin(env, "2.0.0")
    with registry_for(env) as api:
        indexes = {}
        for service, image in pushed.images.items():
            path = image.repository.split("/", 1)[1]
            body, media_type = api.manifest(path, image.digest)
            entry = {"mediaType": media_type, "digest": image.digest, "size": len(body)}
            # As buildx pushes it: the image, and an attestation listed as unknown/unknown first.
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
                {**entry, "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
                {**entry, "platform": {"os": "linux", "architecture": "amd64"}}]}
            indexes[service] = api.put_manifest(path, "2.0.0-index", json.dumps(index).encode(),
                                                "application/vnd.oci.image.index.v1+json")
            assert indexes[service] != image.digest and api.labels(path, indexes[service])[LABEL_VERSION] == "2.0.0"

    client = docker.from_env()
    pinned = build_pin(env, "2.0.0", tag="2.0.0-index")  # the tag names the index: pinned by the index's digest
    assert {s: i.digest for s, i in pinned.images.items()} == indexes
    for image in pinned.images.values():
        client.images.get(image.ref)  # pulled by the index's digest, runnable as it is
        assert image.digest in repo_digests(client, image.ref, image.repository)
