"""Logical backups: encrypted at rest (crypto), found and read whole (files), the
preflight checks of their directories (dirs) and of the newest one (latest), and the
backups a release or a rollback takes (take)."""
