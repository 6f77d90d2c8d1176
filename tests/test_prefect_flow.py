"""adapters/prefect_api.flow, the decorator of this project's flows: their runs record
their parameters as Prefect's own flows do, without importing FastAPI (issue 33)."""

import json
import subprocess
import sys

RUN = """
import json, sys
from prefect.client.orchestration import get_client
from smartrelease.adapters.prefect_api import flow

@flow(name="parameters-probe", flow_run_name="parameters-probe-{environment}")
def probe(environment: str, version: str | None = None, digests: dict[str, str] | None = None, wait: bool = True):
    from prefect.runtime import flow_run
    return flow_run.id

run_id = probe("sandbox", digests={"backend": "sha256:ab"}, wait=False)
with get_client(sync_client=True) as client:
    parameters = client.read_flow_run(run_id).parameters
print(json.dumps({"fastapi imported": "fastapi" in sys.modules, "parameters": parameters}))
"""


def test_a_flows_run_records_its_parameters_without_importing_fastapi():
    """Prefect's Flow.serialize_parameters imports FastAPI's encoder on every run's
    creation: 0.15 s. A fresh process, on the suite's server (its address is in the
    environment), runs one flow and reads back what the server recorded."""
    out = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"fastapi imported": False, "parameters": {
        "environment": "sandbox", "version": None, "digests": {"backend": "sha256:ab"}, "wait": False}}
