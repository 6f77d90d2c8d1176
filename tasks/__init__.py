"""Runbook actions. Each module holds plain functions (callable and testable
without Prefect) and a thin Prefect task around each: name, retries, timeout."""
