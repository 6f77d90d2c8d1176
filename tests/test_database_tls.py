"""DATABASE_URL's TLS settings hold for every client of the tool (issue 31): psycopg,
and PostgreSQL's programs on this host, against a PostgreSQL that takes TLS only."""

import subprocess

import pytest
import trustme
from pydantic import SecretStr

from smartrelease.errors import StepFailed
from smartrelease.tasks.pg_client import HostTools
from smartrelease.adapters.postgres import connect_url, parse_database_url
from tests.conftest import DB_NAME, DB_PASSWORD, DB_USER

IN_TLS = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def tls_pg(ca):
    from tests.conftest import _cluster, _destroy

    cluster = _cluster(archive=False)
    cert = ca[0].issue_cert("localhost", "127.0.0.1")
    cluster.serve_tls(b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes())
    yield cluster
    _destroy(cluster)


def url(cluster, query: str) -> SecretStr:
    return SecretStr(f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{cluster.port}/{DB_NAME}?{query}")


def psql(db, sql: str) -> subprocess.CompletedProcess:
    command = HostTools(db).command("psql", "-XAtc", sql, timeout_s=30)
    return subprocess.run(command.argv, env=dict(command.env), capture_output=True, text=True, timeout=30)


def test_a_verified_tls_connection_is_what_psycopg_and_psql_make(tls_pg, ca):
    db = parse_database_url(url(tls_pg, f"sslmode=verify-full&sslrootcert={ca[1]}"), "db")
    with connect_url(db, "db") as conn:
        assert conn.execute(IN_TLS).fetchone()[0] is True
    done = psql(db, IN_TLS)
    assert (done.returncode, done.stdout.strip()) == (0, "t"), done.stderr
    assert DB_PASSWORD not in " ".join(HostTools(db).command("psql", timeout_s=1).argv)


def test_a_server_whose_certificate_the_url_does_not_trust_is_refused_by_every_client(tls_pg, tmp_path):
    """Before, sslmode and sslrootcert were dropped: libpq's default (prefer) took any
    certificate, so a server in the middle read every query and the password."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    db = parse_database_url(url(tls_pg, f"sslmode=verify-full&sslrootcert={other}"), "db")
    with pytest.raises(StepFailed, match="certificate verify failed"):
        connect_url(db, "db")
    done = psql(db, "SELECT 1")
    assert done.returncode != 0 and "certificate verify failed" in done.stderr, done.stderr


def test_a_drivers_own_ssl_flag_is_refused_naming_sslmode(tls_pg):
    with pytest.raises(StepFailed, match="need sslmode: add sslmode=verify-full"):
        parse_database_url(url(tls_pg, "ssl=true"), "db")
    with pytest.raises(StepFailed, match="'sslmod', which libpq does not know"):
        parse_database_url(url(tls_pg, "sslmod=require"), "db")
