# The commands of the README's quick start:
#   make demo   a plain install (`pip install .`, no extras, .venv-demo/), then deploy
#               examples/hello, call it for real and tear it down
#   make test   set up everything a fresh clone needs; lint first, then the whole suite
#   make lint   ruff check, ruff format --check, mypy (cheap: `make test` runs it first)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.skyform-installed
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.skyform-installed
SOURCES := pyproject.toml README.md $(shell find declare state providers runtime -type f ! -name '*.pyc' ! -path '*/__pycache__/*' 2>/dev/null)

.PHONY: demo test lint bench bench-peers clean system-deps
# bench/loadgen.py is the benches' wrk driver; bench/peers.py is opt-in (make bench-peers).
BENCHES := $(filter-out bench/loadgen.py bench/peers.py,$(wildcard bench/*.py))

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,skypilot,torch]'
	touch $(STAMP)

# A plain install, as a user's `pip install .` makes it: a copy of the sources,
# so it is rebuilt whenever they change.
$(DEMO_STAMP): $(SOURCES)
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet .
	touch $(DEMO_STAMP)

system-deps:
	bash scripts/system-deps.sh

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/python examples/hello/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/typecheck.py

# Cheap checks first, so CI fails fast; the suite includes the install matrix
# (tests/ci: fresh venvs, plain and [skypilot]) and the CI example's workflow.
# Two workers: most tests wait on real processes, so two run in about half the
# time on two cores; a file runs on one worker, in order (some files build on one
# stack from test to test). PYTEST_ARGS replaces it (e.g. PYTEST_ARGS="-n 0 tests/cli").
PYTEST_ARGS ?= -n 2 --dist loadfile
test: $(STAMP) lint system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	bash scripts/bench-deps.sh
	for b in $(BENCHES); do $(BIN)/python $$b || exit 1; done

# Installs Ray Serve, BentoML and LitServe into venvs of their own under .bench/, then
# compares them with bare FastAPI and skyform on the same endpoints (bench/peers.py).
bench-peers: $(STAMP)
	bash scripts/bench-deps.sh
	$(BIN)/python bench/peers.py --install $(PEERS_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_VENV) .skyform .bench build *.egg-info
