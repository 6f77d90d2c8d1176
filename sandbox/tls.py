"""The sandbox's CA and its edge's certificate, renewed before it runs out."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import trustme
from cryptography import x509

from smartrelease.sandbox.settings import Settings

EDGE_CERT_DAYS = 90  # a realistic lifetime (Let's Encrypt's), so preflight's expiry figure means something


EDGE_CERT_RENEW_DAYS = 30


def _days_left(cert_pem: Path) -> float:
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return (cert.not_valid_after_utc - datetime.now(timezone.utc)).total_seconds() / 86400


def ensure_tls(s: Settings) -> None:
    """A sandbox CA and an edge certificate for localhost and 127.0.0.1, renewed
    when it has fewer than EDGE_CERT_RENEW_DAYS left."""
    s.tls_dir.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = s.tls_dir / "ca.pem", s.tls_dir / "edge.pem", s.tls_dir / "edge.key"
    if ca_pem.is_file() and cert_pem.is_file() and key_pem.is_file() and _days_left(cert_pem) > EDGE_CERT_RENEW_DAYS:
        return
    ca = trustme.CA(organization_name="SmartRelease sandbox CA")
    cert = ca.issue_cert("localhost", "127.0.0.1", not_after=datetime.now(timezone.utc) + timedelta(days=EDGE_CERT_DAYS))
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    key_pem.chmod(0o644)  # read by HAProxy inside the edge container
    with open(cert_pem, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
