"""How people trigger the flows: Prefect's own server, deployments and workers.

`catalog` declares the deployments once (per flow and environment); `apply` puts them
on the server with each environment's work pool and lock, and starts workers;
`server` runs a self-hosted Prefect server on PostgreSQL; `trigger` is CI's way in.
"""
