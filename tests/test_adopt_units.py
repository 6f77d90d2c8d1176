"""Adoption's decisions as pure logic: what an adoption row means to the history stack
and to the running version, and preflight's `running` check on images no registry
holds (Container values as Docker Engine reports them)."""

from smartrelease.blocks.app_environment import AppEnvironment
from smartrelease.blocks.envfile import Environment
from smartrelease.blocks.release_target import ReleaseTarget
from smartrelease.record.history import deployed
from smartrelease.tasks.rollback_plan import adopted_version, running_deployment
from smartrelease.adapters.running import Container
from smartrelease.tasks.takeover import first_release_note, unpinned

REG = "127.0.0.1:9"
B, F = f"{REG}/app/backend@sha256:", f"{REG}/app/frontend@sha256:"


def env() -> Environment:
    return Environment(name="prod", app=AppEnvironment(), target=ReleaseTarget(
        env_file="/etc/smartaccounting/.env.prod", registry=REG, backend_image="app/backend",
        frontend_image="app/frontend", compose_project="accounting"))


def row(version, result="released"):
    return {"version": version, "result": result, "backend": B + version, "frontend": F + version,
            "finished": "2026-12-01 10:00:00Z"}


def service(name: str, reference: str, digests=(), labels=None) -> Container:
    return Container(id="c-" + name, name=name, service=name, reference=reference, status="running",
                     health="healthy", restarts=0, image_id="sha256:" + "ab" * 32, digests=tuple(digests),
                     image_labels=labels or {})


def test_an_adoption_is_a_deployment_the_stack_can_go_back_to():
    rows = [row("0.9.0", "adopted"), row("1.0.0"), row("0.9.0", "rolled back"), row("1.0.0")]
    assert [(r["version"], r["result"]) for r in deployed(rows)] == [("0.9.0", "rolled back"), ("1.0.0", "released")]
    # A failed adoption (no images) is no deployment.
    assert deployed([{"version": "(none decided)", "result": "failed at adopt", "backend": "", "frontend": ""}]) == []


def test_the_version_of_unlabelled_images_is_the_one_their_adoption_recorded():
    images = {"backend": B + "0.9.0", "frontend": F + "0.9.0"}
    assert adopted_version([row("0.9.0", "adopted")], images) == "0.9.0"
    assert adopted_version([row("0.9.0")], images) is None  # released by the tool: it has labels
    assert adopted_version([row("0.9.0", "adopted")], {**images, "frontend": F + "other"}) is None
    running = {"backend": service("backend", "hand/backend:0.9.0", [B + "0.9.0"]),
               "frontend": service("frontend", "hand/frontend:0.9.0", [F + "0.9.0"])}
    assert running_deployment(env(), running, [row("0.9.0", "adopted")]).model_dump() == {
        "version": "0.9.0", "images": images, "adopted": True}
    labelled = {**running, "backend": service("backend", B + "1.0.0", [B + "1.0.0"],
                                              {"org.opencontainers.image.version": "1.0.0"})}
    assert running_deployment(env(), labelled, [row("0.9.0", "adopted")]).model_dump() == {
        "version": "1.0.0", "images": {**images, "backend": B + "1.0.0"}, "adopted": False}
    # Unlabelled and never adopted: pinned, but of no known version.
    assert running_deployment(env(), running, []).version is None


def test_images_no_registry_holds_are_named_service_by_service():
    app = {"backend": service("backend", "hand/backend:0.9.0")}
    assert unpinned(env(), app) == [
        "backend runs hand/backend:0.9.0 (image abababababab), which 127.0.0.1:9/app/backend does not hold",
        "frontend has no container"]
    assert unpinned(env(), {"backend": service("backend", B + "1", [B + "1"]),
                            "frontend": service("frontend", F + "1", [F + "1"])}) == []


def test_nothing_running_is_a_first_release_and_with_a_history_it_names_the_last_release():
    assert first_release_note(env(), []).model_dump() == {
        "detail": "nothing of the app runs in Compose project accounting: a first release", "warning": False}
    rebuilt = first_release_note(env(), [row("1.0.0"), row("1.1.0"), row("1.2.0", "failed at verify")])
    assert rebuilt.warning and "the history's last release is 1.1.0 (2026-12-01 10:00:00Z)" in rebuilt.detail
    assert "released as a first release" in rebuilt.detail
