# The two commands first: `make run` and `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint install clean chaos

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m sandbox.run $(RUN_ARGS)

# In parallel (pytest-xdist): TEST_WORKERS processes, 4 by default, which measured best on 2 cores (most tests
# wait on processes and emulators). PYTEST_ARGS comes last, so "-n 0" there runs the suite in this process.
TEST_WORKERS ?= 4
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxschedchunk 2 --durations=10 $(PYTEST_ARGS)

# BENCH_ARGS="--quick" or "--only burst,steady" (bench/README.md: the groups and how long each takes).
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# The fault campaign (docs/reliability.md): CHAOS_ARGS="--seed 2 --duration 900" or "--short".
chaos: $(STAMP)
	$(PY) -m sandbox.chaos $(CHAOS_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	DJANGO_DEBUG=true $(VENV)/bin/mypy .

clean:
	rm -rf $(VENV) var
