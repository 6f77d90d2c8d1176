"""Runbook, "Promotion strategy (dev -> prod)", first half: build the app checkout for
dev, tagged `dev-<short git SHA>`, pushed; published as the artifact `build-<env>`."""

from smartrelease.adapters.prefect_api import flow
from prefect.artifacts import create_markdown_artifact

from smartrelease.flows.steps import StepRunner, Stopped, final_state
from smartrelease.flows.runbook import environment_of, run_facts
from smartrelease.report import Report
from smartrelease.tasks.dev_build import dev_build_task


@flow(name="build", flow_run_name="build-{environment}")
def build(environment: str):
    """Build and push the app checkout of `environment` as dev-<short git SHA>."""
    env = environment_of(environment)
    steps = StepRunner((dev_build_task,))
    facts = run_facts()
    try:
        pinned = steps.run(dev_build_task, env)
        facts.version, facts.digests, facts.git_sha = pinned.version, pinned.digests, pinned.git_sha
    except Stopped:
        pass
    report = Report(flow="build", environment=environment, results=steps.results(), facts=facts)
    create_markdown_artifact(key=f"build-{environment}", markdown=report.markdown(),
                             description=f"Dev build for {environment}")
    return final_state(report, f"built {next(iter(pinned.images.values())).tag}" if report.ok else "", "build failed")
