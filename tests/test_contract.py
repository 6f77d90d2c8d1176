"""The app's contract and the commands built from it, as pure values: what compose
is asked to do, where PostgreSQL's programs run, and bad contract values refused when
the env file is read."""

import pytest
from pydantic import SecretStr

from smartrelease.blocks.app_contract import AppContract, has_key, json_value, key_paths
from smartrelease.blocks.envfile import parse_env_file
from smartrelease.flows.release import release_steps
from smartrelease.errors import ConfigError
from smartrelease.adapters.compose import ComposeProject
from smartrelease.tasks.launch import compose_variables, project_compose
from smartrelease.tasks.pg_client import HostTools, ServiceTools, pg_tools
from smartrelease.adapters.postgres import DatabaseUrl, reachable_url
from tests.conftest import DB_PASSWORD


def test_the_runbooks_values_are_the_defaults():
    c = AppContract()
    assert (c.service("backend"), c.service("frontend"), c.database_service) == ("backend", "frontend", None)
    assert (c.image_variable("backend"), c.image_variable("frontend")) == ("BACKEND_IMAGE", "FRONTEND_IMAGE")
    assert c.smoke_paths == ("/health", "/ready", "/api/system/version", "/api/auth/health")
    assert c.version_keys == {"version": "version", "git_sha": "gitSha", "build_time": "buildTime",
                              "environment": "environment"}
    assert (c.metrics_url, c.migrations_table, c.undo_command) == ("/metrics", "SequelizeMeta", "npm run db:rollback")


def test_an_app_that_names_things_otherwise_is_described_by_its_env_file(write_env):
    env = parse_env_file(write_env(RELEASE_BACKEND_SERVICE="api", RELEASE_FRONTEND_SERVICE="web",
                                   RELEASE_BACKEND_IMAGE_VARIABLE="API_IMAGE", RELEASE_HEALTH_PATH="/healthz",
                                   RELEASE_VERSION_KEY="build.version", RELEASE_MIGRATIONS_TABLE="migrations_log",
                                   RELEASE_METRICS_URL="http://api:9100/metrics"))
    t = env.target
    assert t.role_of("api") == "backend" and t.role_of("web") == "frontend" and t.role_of("db") is None
    assert "smoke /healthz" in release_steps(t) and "smoke /health" not in release_steps(t)
    assert json_value({"build": {"version": "1.2.3"}}, t.version_key) == "1.2.3"
    assert json_value({"build": "1.2.3"}, t.version_key) is None
    variables = compose_variables(env, {"backend": "r/api@sha256:" + "a" * 64})
    assert variables["API_IMAGE"] == "r/api@sha256:" + "a" * 64 and "BACKEND_IMAGE" not in variables
    assert variables["FRONTEND_IMAGE"] == "unused"  # a command that starts neither still interpolates


@pytest.mark.parametrize("key, value, why", [
    ("RELEASE_HEALTH_PATH", "health", "must be a path starting with /"),
    ("RELEASE_BACKEND_SERVICE", "-api", "must be a Compose service name"),
    ("RELEASE_BACKEND_IMAGE_VARIABLE", "API-IMAGE", "must be a variable name"),
    ("RELEASE_METRICS_URL", "http://user:pw@backend:8080/metrics", "without credentials"),
    ("RELEASE_VERSION_KEY", "build..version", "must be a JSON key"),
    ("RELEASE_MIGRATIONS_TABLE", "m" * 64, "1 to 63 bytes"),
    ("RELEASE_DATABASE_ADDRESS", "127.0.0.1:99999", "must be host:port"),
    ("RELEASE_DATABASE_ADDRESS", "127.0.0.1", "must be host:port"),
])
def test_a_bad_contract_value_is_refused_by_its_key(write_env, key, value, why):
    with pytest.raises(ConfigError) as refused:
        parse_env_file(write_env(**{key: value}))
    assert f"{key}: " in str(refused.value) and why in str(refused.value)


def test_with_a_database_service_compose_gets_the_postgres_images_variables_and_never_recreates_it(write_env):
    env = parse_env_file(write_env(DATABASE_URL=f"postgresql://app:{DB_PASSWORD}@db:5432/books",
                                   RELEASE_DATABASE_SERVICE="db", RELEASE_COMPOSE_FILE="/srv/app/compose.yml",
                                   RELEASE_COMPOSE_PROJECT="books"))
    variables = compose_variables(env, {})
    assert (variables["POSTGRES_USER"], variables["POSTGRES_PASSWORD"], variables["POSTGRES_DB"]) == (
        "app", DB_PASSWORD, "books")
    project = project_compose(env)
    up_db = project.up(["db"], no_recreate=True, wait=True)
    assert up_db.argv[-4:] == ("--remove-orphans", "--no-recreate", "--wait", "db")
    assert project.up(["backend", "edge"], no_deps=True).argv[-3:] == ("--no-deps", "backend", "edge")
    assert DB_PASSWORD not in " ".join(up_db.argv) and DB_PASSWORD not in repr(up_db)


def test_a_programs_secret_reaches_its_container_through_the_environment_never_argv():
    project = ComposeProject("/srv/app/compose.yml", "books", {"JWT_SECRET": "j" * 40})
    tools = ServiceTools(project, "db", DatabaseUrl("db", 5432, "books", "app", SecretStr(DB_PASSWORD)))
    dump = tools.command("pg_dump", "--format=custom", timeout_s=60)
    assert dump.argv[:7] == ("docker", "compose", "--file", "/srv/app/compose.yml", "--project-name", "books", "exec")
    assert dump.argv[7:] == ("-T", "-e", "PGCONNECT_TIMEOUT", "-e", "PGPASSWORD", "db", "pg_dump", "-h", "127.0.0.1",
                             "-p", "5432", "-d", "books", "-U", "app", "--format=custom")
    assert dump.env["PGPASSWORD"] == DB_PASSWORD and DB_PASSWORD not in " ".join(dump.argv)
    assert dump.name == "pg_dump (in the db service)"
    # Reading a file connects to nothing, so it gets no password at all.
    read = tools.command("pg_restore", "--file=/dev/null", connect=False, timeout_s=60)
    assert "PGPASSWORD" not in read.env and read.argv[-2:] == ("pg_restore", "--file=/dev/null")


def test_this_hosts_programs_connect_where_this_host_reaches_the_database(write_env):
    env = parse_env_file(write_env(DATABASE_URL=f"postgresql://app:{DB_PASSWORD}@host.docker.internal:6543/books",
                                   RELEASE_DATABASE_ADDRESS="127.0.0.1:6543"))
    db = reachable_url(env, "test")
    assert (db.host, db.port, db.seen_by_app) == ("127.0.0.1", 6543, "host.docker.internal:6543")
    assert db.safe() == "app@host.docker.internal:6543/books (reached at 127.0.0.1:6543)"
    tools = HostTools(db)
    command = tools.command("psql", "-X", timeout_s=60)
    assert command.argv == ("/usr/bin/psql", "-h", "127.0.0.1", "-p", "6543", "-d", "books", "-U", "app", "-X")
    assert command.env == {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10", "PGPASSWORD": DB_PASSWORD}
    assert pg_tools(env, "test", server=False) == HostTools()  # files only: nothing to connect to


def test_the_stand_ins_dockerfile_starts_from_the_dependencies_image_of_its_lockfile():
    """A changed package-lock.json needs the Dockerfile's DEPS_IMAGE tag changed with it:
    `sandbox up` builds the image under the lockfile's hash, the release build asks for
    the Dockerfile's."""
    import re

    from smartrelease.sandbox.base_image import deps_image_name
    from smartrelease.sandbox.settings import APP_TEMPLATE

    named = re.search(r"^ARG DEPS_IMAGE=(\S+)$", (APP_TEMPLATE / "Dockerfile").read_text(), re.M)
    assert named and named.group(1) == deps_image_name(APP_TEMPLATE / "package-lock.json")


def test_a_version_answer_in_another_shape_is_named_by_the_keys_it_has():
    """An app answering `{"success": true, "metadata": {...}}`: a key the contract
    names but the answer lacks is told from a null, and the message can list what the
    answer does have, nested keys dotted, each on one line however it is spelt."""
    body = {"success": True, "metadata": {"version": "1.0.0", "gitSha": None, "build": {"at": "x"}},
            "odd\nkey": 1, "empty": {}}
    assert has_key(body, "metadata.version") and has_key(body, "metadata.gitSha") and has_key(body, "empty")
    assert not has_key(body, "version") and not has_key(body, "metadata.version.major")
    assert key_paths(body) == ["success", "metadata.version", "metadata.gitSha", "metadata.build.at", "odd\\nkey",
                               "empty"]
    many = {f"k{i}": i for i in range(25)}
    assert key_paths(many)[-1] == "… 5 more" and len(key_paths(many)) == 21

