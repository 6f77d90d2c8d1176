"""A sandbox's identity (sandbox/identity.py): its id and ports kept in its state
directory, a default port that is taken moving to a free one (real sockets), and
the one line naming another sandbox's leftovers."""

import io
import json
import socket
import tarfile

import docker
import pytest

from smartrelease.sandbox import identity, manager
from smartrelease.adapters.images import remove_images
from smartrelease.adapters.running import compose_labels, containers
from tests.conftest import free_port, unique


def test_a_default_port_that_is_taken_moves_to_a_free_one_and_says_so(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setitem(identity.PORTS, "edge", (taken, "SANDBOX_EDGE_PORT", "the TLS edge"))
        port, line = identity.claim_port("edge", None)
        assert port != taken and identity.port_free(port)
        assert line == (f"port {taken} is taken: the TLS edge uses {port} instead "
                        "(recorded in the sandbox's state; SANDBOX_EDGE_PORT sets it)")
    free = free_port()
    monkeypatch.setitem(identity.PORTS, "edge", (free, "SANDBOX_EDGE_PORT", "the TLS edge"))
    assert identity.claim_port("edge", None) == (free, None)


def test_settings_take_the_ports_and_project_the_sandbox_recorded(tmp_path, monkeypatch):
    for _, variable, _ in identity.PORTS.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("SANDBOX_PROJECT", raising=False)
    identity.Identity("a1b2c3", {"edge": 40001, "registry": 40002, "server": 40003}).save(tmp_path)
    s = manager.Settings(root=tmp_path, env_file=tmp_path / ".env.sandbox")
    assert (s.project, s.dev.project) == ("smartaccounting-sandbox-a1b2c3", "smartaccounting-sandbox-a1b2c3-dev")
    assert (s.edge_port, s.registry, s.public_url) == (40001, "127.0.0.1:40002", "https://localhost:40001")
    assert s.plane().server.port == 40003 and s.plane().owns_server
    monkeypatch.setenv("SANDBOX_EDGE_PORT", "40100")  # set explicitly: it wins
    assert manager.Settings(root=tmp_path, env_file=tmp_path / ".env.sandbox").edge_port == 40100


def test_a_port_variable_that_is_no_number_is_one_line(monkeypatch):
    monkeypatch.setenv("SANDBOX_REGISTRY_PORT", "50o1")
    with pytest.raises(identity.IdentityError, match=r"^SANDBOX_REGISTRY_PORT must be a port number, not '50o1'$"):
        manager.Settings()


def test_the_record_replaces_a_planted_link_instead_of_following_it(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("not the tool's\n")
    root = tmp_path / ".sandbox"
    root.mkdir()
    (root / identity.FILE).symlink_to(target)
    identity.Identity("0f0f0f", {"edge": 1}).save(root)
    assert target.read_text() == "not the tool's\n"
    assert not (root / identity.FILE).is_symlink()
    assert json.loads((root / identity.FILE).read_text())["id"] == "0f0f0f"


def test_an_unreadable_record_is_one_line_with_the_way_out(tmp_path):
    (tmp_path / identity.FILE).write_text("{not json")
    with pytest.raises(identity.IdentityError) as refused:
        identity.Identity.load(tmp_path)
    assert "\n" not in str(refused.value) and "`smartrelease sandbox destroy` starts afresh" in str(refused.value)


def test_a_leftover_is_named_in_one_line_with_the_command_that_removes_it():
    left = identity.Leftover("smartaccounting-sandbox-0a0b0c", ("p-backend-1", "p-db-1"), ("p_db-data",),
                             "its state directory is gone", ("p_default",))
    assert left.line() == ("left behind by another sandbox (its state directory is gone), not reused: Compose project "
                           "smartaccounting-sandbox-0a0b0c (containers p-backend-1, p-db-1, networks p_default, volumes "
                           "p_db-data); `docker rm -f p-backend-1 p-db-1 && docker network rm p_default && docker volume "
                           "rm p_db-data` removes it")
    assert identity.Leftover("p", (), ("v",), "x").removal() == "docker volume rm v"


def test_the_cli_names_a_bad_port_setting_in_one_line_and_touches_nothing(monkeypatch, tmp_path, capsys):
    from smartrelease.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SANDBOX_EDGE_PORT", "abc")
    for action in ("up", "status", "down"):
        assert main(["sandbox", action]) == 2
        assert capsys.readouterr().err == "smartrelease: SANDBOX_EDGE_PORT must be a port number, not 'abc'\n"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def labelled_containers():
    """Two created (never started) containers of a Compose project named after this
    test, from an empty image imported here: no registry, no base image needed."""
    client = docker.from_env()
    image = f"smartrelease-empty:{unique('t')}"
    client.api.import_image_from_data(io.BytesIO(_empty_tar()), repository=image.split(":")[0], tag=image.split(":")[1])
    project = f"{identity.PROJECT_PREFIX}-{unique('race')}"
    made = [client.containers.create(image, command=["none"], name=f"{project}-{n}", labels={
        identity.PROJECT_LABEL: project, identity.COMPOSE_ENV_LABEL: f"/nonexistent/{project}/.env"}) for n in (1, 2)]
    yield client, project, made
    for c in made:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
    client.images.remove(image, force=True)


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


@pytest.mark.e2e
def test_a_container_removed_between_dockers_list_and_its_inspect_is_left_out_not_an_error(labelled_containers,
                                                                                              monkeypatch):
    """`sandbox up` beside another sandbox's `down` failed with docker-py's NotFound:
    a container in Docker's list was gone when docker-py inspected it. Here the
    container is removed (for real) at that very moment."""
    client, project, (gone, kept) = labelled_containers
    inspect = client.api.inspect_container

    def removed_first(container_id):
        if container_id == gone.id:
            client.api.remove_container(container_id, force=True)
        return inspect(container_id)

    monkeypatch.setattr(client.api, "inspect_container", removed_first)
    assert [c.id for c in containers(client, *compose_labels(project))] == [kept.id]
    assert project in identity.orphaned_projects(client, exclude=set())  # the one left still names it
    with pytest.raises(docker.errors.NotFound):  # what docker-py does by default, and the sandbox did
        gone.reload()


@pytest.mark.e2e
def test_an_image_removed_by_another_sandbox_while_one_removes_its_own_is_not_an_error(monkeypatch):
    """CI at f166f11: a sandbox's `destroy` failed with docker-py's ImageNotFound, since
    `images.list()` inspects each image it listed and another sandbox had just deleted
    one of its own. Here an image is deleted (for real) at that moment, should anything
    inspect it; the other's tags are still removed."""
    client = docker.from_env()
    theirs, ours = f"smartrelease-empty-{unique('theirs')}", f"smartrelease-empty-{unique('ours')}"
    for repository in (theirs, ours):
        tar = tarfile.TarInfo(repository)  # a file of its own: an image id of its own
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.addfile(tar, io.BytesIO(b""))
        client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag="1")
    their_id = client.images.get(f"{theirs}:1").id
    inspect = client.api.inspect_image

    def deleted_first(image_id):
        if image_id == their_id:
            client.api.remove_image(image_id, force=True)
        return inspect(image_id)

    monkeypatch.setattr(client.api, "inspect_image", deleted_first)
    try:
        assert remove_images(client, f"{ours}") == 1
        assert client.api.images(name=ours) == []
    finally:
        for repository in (theirs, ours):
            try:
                client.api.remove_image(f"{repository}:1", force=True)
            except docker.errors.NotFound:
                pass
