# The two commands of the README's quick start:
#   make demo   set up, then deploy examples/hello, call it for real and tear it down
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.skyform-installed

.PHONY: demo test lint bench bench-peers clean system-deps
# bench/loadgen.py is the benches' wrk driver; bench/peers.py is opt-in (make bench-peers).
BENCHES := $(filter-out bench/loadgen.py bench/peers.py,$(wildcard bench/*.py))

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,skypilot,torch]'
	touch $(STAMP)

system-deps:
	bash scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/python examples/hello/demo.py

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	bash scripts/bench-deps.sh
	for b in $(BENCHES); do $(BIN)/python $$b || exit 1; done

# Installs Ray Serve, BentoML and LitServe into venvs of their own under .bench/, then
# compares them with bare FastAPI and skyform on the same endpoints (bench/peers.py).
bench-peers: $(STAMP)
	bash scripts/bench-deps.sh
	$(BIN)/python bench/peers.py --install $(PEERS_ARGS)

clean:
	rm -rf $(VENV) .skyform .bench build *.egg-info
