"""Adapters: this project's one way to each outside system it drives, below the
runbook's actions: Docker Engine (`images.engine`, `running.Container`), Compose
(`compose`: commands as values), the registry (`registry`, `registry_auth`),
PostgreSQL (`postgres`), HTTP (`http`: one client policy), and every Prefect internal
the project relies on (`prefect_api`)."""
