# Two commands matter:  `make run` (the hub on embedded defaults) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test test-deps lint bench

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/hub init --sample
	$(BIN)/hub run

test-deps: $(BIN)/.installed
	scripts/install-kannel.sh
	scripts/install-synapse.sh

# Two processes: most tests wait on peers (workers, Synapse, Kannel), and each process has its own.
test: test-deps
	$(BIN)/python -m pytest -n 2

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.all
