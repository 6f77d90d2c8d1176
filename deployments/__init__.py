"""How people trigger the flows: deployments served to the Prefect UI and API.

`python -m deployments.serve` (with PREFECT_API_URL pointing at a Prefect server)
registers every deployment and runs them when someone clicks "Run" in the UI or CI
calls the API. Schedules (post-deploy re-verification) join here with the verify flow.
"""
