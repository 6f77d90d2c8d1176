"""Links into the Prefect UI, for messages, forms and the CLI."""

from uuid import UUID


def ui_base() -> str:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    return (PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")).rstrip("/")


def run_url(flow_run_id: UUID | str) -> str:
    return f"{ui_base()}/runs/flow-run/{flow_run_id}"


def artifact_url(artifact_id: UUID | str) -> str:
    return f"{ui_base()}/artifacts/artifact/{artifact_id}"
