"""A production-like SmartAccounting on one machine: PostgreSQL with WAL archiving,
a registry, the stand-in app under Docker Compose behind a TLS edge."""
