"""Flows: the runbook's sections, each a short sequence of named tasks."""
