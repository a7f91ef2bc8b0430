# Two commands matter:  `make run` (the hub on embedded defaults) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test test-deps fuzz lint bench chaos scale

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
	scripts/install-chromium.sh
	scripts/install-pdf-tools.sh

# Two processes: most tests wait on peers (workers, Synapse, Kannel), and each process has its own.
test: test-deps
	$(BIN)/python -m pytest -n 2

# The OpenAPI fuzz at full size (issue 9): 2,000 schemathesis cases per database, staff key, intake key
# and none; `make test` runs the same test with 150. A few minutes, so CI runs it as a step of its own.
fuzz: $(BIN)/.installed
	HUB_FUZZ_CASES=2000 $(BIN)/python -m pytest -n 2 -p no:cacheprovider --timeout 600 \
		"tests/integration/test_api_inputs.py::test_schemathesis_finds_no_5xx_and_no_answer_outside_the_openapi"

# The chaos soak at CI size (issue 12): 2 minutes of worker SIGKILLs, Redis restarts, provider 429/503 bursts
# and smsbox stopped, then every sink counted (tests/chaos/soak.py; the 30-minute run: docs/reliability.md).
# About 4 minutes with peer start-up, so CI runs it as a step of its own; `make test` does not collect it.
chaos: $(BIN)/.installed
	scripts/install-kannel.sh
	scripts/install-synapse.sh
	$(BIN)/python -m pytest -p no:cacheprovider -s tests/chaos/soak.py

# PostgreSQL's plans of the hot queries at 10,000,000 deliveries (issue 12): builds the rows in a schema of
# its own (about 1.5 minutes), checks, drops it. A step of its own in CI, like `make fuzz`.
scale: $(BIN)/.installed
	HUB_SCALE=1 $(BIN)/python -m pytest -p no:cacheprovider --timeout 600 tests/scale

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.all
