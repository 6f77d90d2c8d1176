"""build-pin against a real registry that requires a login (Debian's docker-registry
with htpasswd), and the registry credentials block it reads."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import bcrypt
import docker
import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr

from smartrelease.blocks import load_environment, parse_env_file
from smartrelease.record.lock import import_environment
from smartrelease.blocks.registry_credentials import OLD_SLUG, RegistryCredentials
from smartrelease.sandbox.registry import Registry
from smartrelease.errors import ConfigError, StepFailed
from smartrelease.tasks.build_recipe import recipe, recipe_problems
from smartrelease.tasks.build_pin import LABEL_REVISION, LABEL_VERSION, build_pin, registry_for
from smartrelease.tasks.dev_build import dev_build
from smartrelease.adapters.images import remove_images
from smartrelease.tasks.promote_tag import resolve_tag, tag_digest
from smartrelease.adapters.registry import Registry as RegistryApi
from tests.conftest import free_port

REGISTRY_USER, REGISTRY_PASS = "ci", "registry-SENTINEL-pass"
# A one-file image: only build-pin's handling of it matters here, and a small image
# keeps each registry of these tests from receiving the sandbox's whole base layer.
DOCKERFILE = "FROM scratch\nARG APP_VERSION=0.0.0\nLABEL app.version=$APP_VERSION\nCOPY Dockerfile /app-version\n"


@pytest.fixture(scope="module")
def auth_registry():
    root = Path(tempfile.mkdtemp(prefix="smartrelease-registry-"))
    htpasswd = root / "htpasswd"
    # The registry checks the hash on every request: bcrypt's lowest cost keeps a push
    # from spending seconds in it (production's cost is the registry operator's choice).
    htpasswd.write_text(f"{REGISTRY_USER}:{bcrypt.hashpw(REGISTRY_PASS.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    registry = Registry(root / "registry", f"127.0.0.1:{free_port()}", htpasswd)
    registry.start()
    yield registry.addr
    registry.stop()
    remove_images(docker.from_env(), f"{registry.addr}/")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A two-image app checkout at 2.0.0, committed."""
    app = tmp_path / "app"
    (app / "client").mkdir(parents=True)
    (app / "VERSION").write_text("2.0.0\n")
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "client" / "Dockerfile").write_text(DOCKERFILE.replace("/app-version", "/client-version"))
    git = ["git", "-C", str(app), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return app


def env_for(tmp_path, registry: str, app: Path, credentials: bool = True, name: str = "pin",
            password: str = REGISTRY_PASS, extra: tuple[str, ...] = ()):
    path = tmp_path / f".env.{name}"
    lines = [f"RELEASE_REGISTRY={registry}", f"RELEASE_APP_DIR={app}",
             f"RELEASE_BACKEND_IMAGE=pin-{name}/backend", f"RELEASE_FRONTEND_IMAGE=pin-{name}/frontend", *extra]
    if credentials:
        lines += [f"RELEASE_REGISTRY_USERNAME={REGISTRY_USER}", f"RELEASE_REGISTRY_PASSWORD={password}"]
    path.write_text("\n".join(lines) + "\n")
    return parse_env_file(path)


def git_sha(app: Path) -> str:
    return subprocess.run(["git", "-C", str(app), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.e2e
def test_builds_pushes_with_the_login_then_deploys_as_pushed(tmp_path, auth_registry, checkout):
    env = env_for(tmp_path, auth_registry, checkout)
    first = build_pin(env, "2.0.0")
    assert {s: i.built for s, i in first.images.items()} == {"backend": True, "frontend": True}
    with RegistryApi(auth_registry, username=REGISTRY_USER, password=REGISTRY_PASS) as api:
        for image in first.images.values():
            path = image.repository.split("/", 1)[1]
            assert api.digest(path, "2.0.0") == image.digest
            labels = api.labels(path, image.digest)
            assert labels[LABEL_VERSION] == "2.0.0" and labels[LABEL_REVISION] == git_sha(checkout)
    second = build_pin(env, "2.0.0")  # already pushed: never rebuilt
    assert {s: (i.built, i.digest) for s, i in second.images.items()} == {s: (False, i.digest) for s, i in first.images.items()}
    assert second.git_sha == git_sha(checkout)
    assert REGISTRY_PASS not in first.model_dump_json() + second.model_dump_json()


@pytest.mark.e2e
def test_without_the_login_the_registry_refusal_is_named(tmp_path, auth_registry, checkout):
    env = env_for(tmp_path, auth_registry, checkout, credentials=False, name="nologin")
    with pytest.raises(StepFailed) as failed:
        build_pin(env, "2.0.0")
    assert failed.value.step == "build-pin" and "(HTTP 401): check RELEASE_REGISTRY_USERNAME" in failed.value.reason


@pytest.mark.e2e
def test_a_dirty_checkout_is_not_built_and_nothing_is_pushed(tmp_path, auth_registry, checkout):
    env = env_for(tmp_path, auth_registry, checkout, name="dirty")
    (checkout / "Dockerfile").write_text(DOCKERFILE + "LABEL dirty=yes\n")
    with pytest.raises(StepFailed) as failed:
        build_pin(env, "2.0.0")
    assert "uncommitted changes" in failed.value.reason
    with RegistryApi(auth_registry, username=REGISTRY_USER, password=REGISTRY_PASS) as api:
        assert api.digest("pin-dirty/backend", "2.0.0") is None


@pytest.mark.e2e
def test_a_named_digest_must_exist_and_agree_with_the_existing_tag(tmp_path, auth_registry, checkout):
    env = env_for(tmp_path, auth_registry, checkout, name="named")
    first = build_pin(env, "2.0.0")
    (checkout / "VERSION").write_text("2.0.1\n")
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@localhost",
                    "commit", "-qam", "2.0.1"], check=True)
    newer = build_pin(env, "2.0.1").images["backend"].digest
    with pytest.raises(StepFailed) as failed:
        build_pin(env, "2.0.0", {"backend": newer})  # a real backend digest, but not 2.0.0's
    assert failed.value.reason == f"pin-named/backend:2.0.0 points to {first.images['backend'].digest}, not to the named {newer}"
    stranger = first.images["frontend"].digest  # a digest of another repository
    with pytest.raises(StepFailed) as failed:
        build_pin(env, "2.0.0", {"backend": stranger})
    assert failed.value.reason == f"pin-named/backend@{stranger} is not in the registry"


def test_registry_login_is_saved_as_a_registry_credentials_block(tmp_path):
    path = tmp_path / ".env.withlogin"
    path.write_text(f"RELEASE_REGISTRY=registry.example.test\nRELEASE_REGISTRY_USERNAME={REGISTRY_USER}\n"
                    f"RELEASE_REGISTRY_PASSWORD={REGISTRY_PASS}\n")
    import_environment(path)
    stored = RegistryCredentials.load("withlogin")
    assert stored.username == REGISTRY_USER and stored.password.get_secret_value() == REGISTRY_PASS
    assert stored.registry_url == "registry.example.test"
    assert REGISTRY_PASS in load_environment("withlogin").secret_values()  # so every report redacts it

    path.write_text("RELEASE_REGISTRY=registry.example.test\n")  # login removed from the file: forgotten
    import_environment(path)
    assert load_environment("withlogin").registry_credentials is None


class EarlierCredentials(Block):
    """What earlier versions of this tool saved the login as: prefect-docker's block."""

    _block_type_slug = OLD_SLUG
    username: str
    password: SecretStr
    registry_url: str


def test_a_login_saved_by_an_earlier_version_is_named_then_saved_again_and_forgotten(tmp_path):
    path = tmp_path / ".env.oldlogin"
    path.write_text("RELEASE_REGISTRY=registry.example.test\n")
    import_environment(path)
    EarlierCredentials(username=REGISTRY_USER, password=REGISTRY_PASS,
                       registry_url="registry.example.test").save("oldlogin", overwrite=True)
    # Loaded without it, the release would push with no login: refused, naming the way on.
    with pytest.raises(ConfigError) as refused:
        load_environment("oldlogin")
    assert str(refused.value) == (
        f"blocks 'oldlogin': the registry login was saved by an earlier version of this tool (a {OLD_SLUG} block): "
        "run `smartrelease blocks import --env-file FILE --name oldlogin` to save it again")
    assert REGISTRY_PASS not in str(refused.value)

    path.write_text(f"RELEASE_REGISTRY=registry.example.test\nRELEASE_REGISTRY_USERNAME={REGISTRY_USER}\n"
                    f"RELEASE_REGISTRY_PASSWORD={REGISTRY_PASS}\n")
    import_environment(path)
    assert load_environment("oldlogin").registry_credentials.username == REGISTRY_USER
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):  # the old copy of the secret is gone
        client.read_block_document_by_name("oldlogin", block_type_slug=OLD_SLUG)


def test_a_username_without_a_password_is_refused(tmp_path):
    path = tmp_path / ".env.halflogin"
    path.write_text(f"RELEASE_REGISTRY=registry.example.test\nRELEASE_REGISTRY_USERNAME={REGISTRY_USER}\n")
    with pytest.raises(ConfigError, match="RELEASE_REGISTRY_USERNAME and RELEASE_REGISTRY_PASSWORD go together"):
        parse_env_file(path)


@pytest.mark.e2e
def test_a_dev_build_is_tagged_with_the_checkouts_short_sha_and_release_labels(tmp_path, auth_registry, checkout):
    env = env_for(tmp_path, auth_registry, checkout, name="dev")
    sha = git_sha(checkout)
    pinned = dev_build(env)
    assert {i.tag for i in pinned.images.values()} == {f"dev-{sha[:7]}"}
    with registry_for(env) as api:
        for service, image in pinned.images.items():
            assert api.digest(f"pin-dev/{service}", f"dev-{sha[:7]}") == image.digest
            labels = api.labels(f"pin-dev/{service}", image.digest)
            assert labels[LABEL_VERSION] == "2.0.0" and labels[LABEL_REVISION] == sha
            assert api.digest(f"pin-dev/{service}", "2.0.0") is None  # the SemVer is promotion's to give
    again = dev_build(env)  # the same commit again: deployed as pushed, not rebuilt
    assert not any(i.built for i in again.images.values()) and again.digests == pinned.digests


@pytest.mark.e2e
def test_tagging_a_digest_copies_the_manifest_and_never_moves_a_tag(tmp_path, auth_registry, checkout):
    env = env_for(tmp_path, auth_registry, checkout, name="tag")
    first = dev_build(env).images["backend"]
    (checkout / "Dockerfile").write_text(DOCKERFILE + "LABEL change=yes\n")
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@localhost",
                    "commit", "-qam", "change"], check=True)
    second = dev_build(env).images["backend"]
    assert first.digest != second.digest
    with registry_for(env) as api:
        assert resolve_tag(api, "pin-tag/backend", first.tag) == first.digest
        assert "now names" in tag_digest(api, "pin-tag/backend", first.digest, "2.0.0")
        assert api.digest("pin-tag/backend", "2.0.0") == first.digest  # the same bytes, read back over the API
        assert "already names" in tag_digest(api, "pin-tag/backend", first.digest, "2.0.0")
        with pytest.raises(StepFailed, match=f"2.0.0 already points to {first.digest}, not to {second.digest}"):
            tag_digest(api, "pin-tag/backend", second.digest, "2.0.0")
        assert api.digest("pin-tag/backend", "2.0.0") == first.digest  # unchanged
        with pytest.raises(StepFailed, match="pin-tag/backend:dev-0000000 does not exist in 127.0.0.1:"):
            resolve_tag(api, "pin-tag/backend", "dev-0000000")


@pytest.mark.e2e
def test_an_image_pushed_without_the_oci_labels_is_refused_up_front(tmp_path, auth_registry, checkout):
    # CI built it with a plain `docker build`: verify could never check it, so it is refused, not deployed.
    env = env_for(tmp_path, auth_registry, checkout, name="nolabels")
    client = docker.from_env()
    client.login(username=REGISTRY_USER, password=REGISTRY_PASS, registry=auth_registry, reauth=True)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "Dockerfile").write_text(DOCKERFILE)
    for service in ("backend", "frontend"):
        repository = f"{auth_registry}/pin-nolabels/{service}"
        client.images.build(path=str(tmp_path / "plain"), tag=f"{repository}:2.0.0", rm=True, pull=False)
        client.images.push(repository, tag="2.0.0")
    with pytest.raises(StepFailed) as refused:
        build_pin(env, "2.0.0")
    assert "lacks the OCI label(s) org.opencontainers.image.version, org.opencontainers.image.revision, " \
           "org.opencontainers.image.created" in refused.value.reason
    assert "--label org.opencontainers.image.version=$(cat VERSION)" in refused.value.reason


STAGED = ("FROM scratch AS base\nCOPY VERSION /app-version\n"
          "FROM base AS prod\nARG APP_VERSION=0.0.0\nARG NODE_MAJOR=0\nLABEL stage=prod node.major=$NODE_MAJOR\n"
          "FROM base AS debug\nLABEL stage=debug\n")


@pytest.mark.e2e
def test_the_build_recipe_is_the_compose_files_own_dockerfile_target_args_and_labels(tmp_path, auth_registry, checkout):
    """The runbook's compose file builds the backend from `Dockerfile.backend`, stage
    `prod`, with an argument and a label of its own: build-pin builds exactly that (the
    last stage of a default `Dockerfile` would have been built before)."""
    (checkout / "Dockerfile.backend").write_text(STAGED)
    compose = checkout / "docker-compose.prod.yml"
    compose.write_text("services:\n  backend:\n    build:\n      context: .\n      dockerfile: Dockerfile.backend\n"
                       "      target: prod\n      args: {NODE_MAJOR: '20'}\n      labels: {team: books}\n"
                       "    container_name: books-api\n  frontend:\n    build: ./client\n")
    subprocess.run(["git", "-C", str(checkout), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@localhost",
                    "commit", "-qm", "compose"], check=True)
    env = env_for(tmp_path, auth_registry, checkout, name="recipe",
                  extra=(f"RELEASE_COMPOSE_FILE={compose}", "RELEASE_COMPOSE_PROJECT=books"))
    pinned = build_pin(env, "2.0.0")
    with RegistryApi(auth_registry, username=REGISTRY_USER, password=REGISTRY_PASS) as api:
        labels = api.labels("pin-recipe/backend", pinned.images["backend"].digest)
        assert (labels["stage"], labels["node.major"], labels["team"]) == ("prod", "20", "books")
        assert labels[LABEL_VERSION] == "2.0.0"  # the tool's own labels kept
        assert api.labels("pin-recipe/frontend", pinned.images["frontend"].digest)["app.version"] == "2.0.0"


def test_a_build_section_this_tool_cannot_pass_is_refused_naming_the_key_and_one_outside_the_checkout_too(tmp_path):
    env = parse_env_file(_write(tmp_path / ".env.recipes", f"RELEASE_APP_DIR={tmp_path / 'app'}\n"))
    secret = {"services": {"backend": {"build": {"context": str(tmp_path / "app"), "secrets": [{"source": "npmrc"}],
                                                 "ssh": ["default"]}}}}
    assert recipe_problems(secret, env) == [
        "backend's build: uses secrets, ssh, which this tool's build cannot pass (it takes context, dockerfile, "
        "target, args, labels): build and push the image yourself and release it with --digests"]
    outside = {"services": {"backend": {"build": {"context": "/srv/elsewhere"}}, "frontend": {}}}
    assert recipe_problems(outside, env) == [
        f"backend's build context /srv/elsewhere is outside RELEASE_APP_DIR {tmp_path / 'app'}, whose checkout of "
        "the version is what a release builds and labels"]
    fallback = recipe(outside, env, "frontend")
    assert fallback.context == str(tmp_path / "app" / "client") and fallback.dockerfile == "Dockerfile"
    assert fallback.origin == "RELEASE_FRONTEND_CONTEXT, no build: in the compose file"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
