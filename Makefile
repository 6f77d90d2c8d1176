# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SR := $(VENV)/bin/smartrelease
# Docker Engine for a user whose docker group membership is from this session (see the script).
WITH_DOCKER := bash scripts/with-docker-group.sh

.PHONY: setup system venv demo server server-down test test-fast sandbox-down clean

setup: system venv

# Docker Engine, Compose v2, registry, PostgreSQL 15, mmdebstrap (Debian packages).
system:
	$(SUDO) bash scripts/install-system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt VERSION
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test]"
	touch $@

# The Prefect server (UI at http://127.0.0.1:4200) on PostgreSQL; see docs/control-plane.md.
SERVER_PORT ?= 4200
API := http://127.0.0.1:$(SERVER_PORT)/api
server: setup
	env SMARTRELEASE_SERVER_PORT=$(SERVER_PORT) $(SR) server up

server-down: venv
	env SMARTRELEASE_SERVER_PORT=$(SERVER_PORT) $(SR) server down

# A fresh sandbox at 0.9.0 with its control plane (`sandbox up --server`: the Prefect
# server on PostgreSQL, the deployments, the sandbox's worker), then three releases
# triggered through the `release/sandbox` deployment: 1.0.0, 1.1.0 (with a migration)
# and a broken 1.2.0 that rolls itself back. The server and worker keep running for
# the UI (the demo prints its address); `make sandbox-down` stops them. The demo
# prints each report; Prefect's own logging would add the traceback of the failure
# the broken 1.2.0 is built to have.
demo: setup
	$(WITH_DOCKER) env PREFECT_LOGGING_LEVEL=CRITICAL $(VENV)/bin/python -m smartrelease.sandbox.demo

# In parallel: each pytest-xdist worker runs whole modules, on a Prefect server and
# sandboxes of its own. The module marked `exclusive` (the cutover's) comes last and
# runs once the other workers have ended: it counts requests dropped under load, and
# restarts Docker Engine (which stops every container on the machine). One registry
# serves the whole run (tests/suite.py).
WORKERS ?= 3
test: setup
	$(WITH_DOCKER) $(VENV)/bin/python -m tests.suite --workers $(WORKERS)

# Skips the slow end-to-end tests; needs only PostgreSQL and the venv.
test-fast: venv
	$(VENV)/bin/pytest -n $(WORKERS) -m "not e2e"

sandbox-down:
	$(WITH_DOCKER) $(SR) sandbox down

clean: venv
	$(WITH_DOCKER) $(SR) sandbox destroy
