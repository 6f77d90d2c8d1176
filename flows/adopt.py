"""`smartrelease adopt`: take over an environment released by hand with the runbook
(docs/flows.md, "Adoption"):

lock -> adopt

Its running images are pushed as they are to the registry (`adopted-<version>`, the
version the app reports) and the history records them as `adopted`: preflight then
lets a release through, and a rollback can go back to them. Nothing runs or stops.
"""

from smartrelease.adapters.prefect_api import flow

from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import publish_run_report, read_history
from smartrelease.record.lock import LOCK_STEP
from smartrelease.flows.steps import StepRunner, Stopped, final_state
from smartrelease.flows.runbook import locked_environment, run_facts
from smartrelease.report import Report, StepResult
from smartrelease.tasks.adopt import adopt_task


@flow(name="adopt", flow_run_name="adopt-{environment}")
def adopt(environment: str, wait: bool = True):
    """Take over `environment` as it runs now, released by hand. `wait`: when another
    run is changing the environment, wait for it (else fail at once)."""
    with locked_environment(environment, "adopt", wait) as (env, _, lock_step):
        return adopt_locked(env, lock_step)


def adopt_locked(env: Environment, lock_step: StepResult):
    """The adoption, recorded while it holds the lock: the next release sees it."""
    steps = StepRunner((LOCK_STEP, adopt_task))
    steps.add(lock_step)
    adoption = None
    try:
        adoption = steps.run(adopt_task, env, read_history(env.name))
    except Stopped:
        pass
    images = adoption.images if adoption else {}
    facts = run_facts(version=adoption.version if adoption else None,
                      digests=dict(ref.split("@", 1) for ref in images.values()))
    report = Report(flow="adopt", environment=env.name, results=steps.results(), facts=facts)
    report = publish_run_report(report, f"Adoption of {env.name}", images)
    return final_state(report, f"adopted {facts.version} (released by hand)", "adopt failed")
