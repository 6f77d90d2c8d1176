"""SmartAccounting's release runbook as Prefect flows."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smartrelease")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
