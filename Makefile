# make run   - migrate the default database, then play the reconnect story
# make test  - the whole test suite (real PostgreSQL)
# make lint  - ruff, ruff format --check, mypy --strict, plpgsql_check
# make system-deps - the Debian packages the tests and checks need (as root, or with sudo);
#              lint and test never install anything themselves
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The test and check tools connect as a superuser: they create databases and
# extensions (pgTAP, plpgsql_check).
TEST_PGUSER ?= postgres

.PHONY: run migrate demo test test-proc lint plpgsql-check bench bench-rotate-keys system-deps clean

run: $(STAMP)
	$(BIN)/cmis-repo run

migrate: $(STAMP)
	$(BIN)/cmis-repo migrate

demo: $(STAMP)
	$(BIN)/cmis-repo demo

test: $(STAMP)
	PGUSER=$${PGUSER:-$(TEST_PGUSER)} $(BIN)/pytest

# The suite as a non-root user on a throw-away server started with pg_ctl.
test-proc: $(STAMP)
	VENV=$(VENV) scripts/test-as-non-root.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict
	$(MAKE) plpgsql-check

plpgsql-check: $(STAMP)
	PGUSER=$${PGUSER:-$(TEST_PGUSER)} VENV=$(VENV) scripts/plpgsql-check.sh

# Every benchmark, each in a throw-away database of its own, then the plot
# (docs/performance.png). About 25 minutes; see docs/performance.md.
bench: $(STAMP)
	$(BIN)/python -m bench.function_floor
	$(BIN)/python -m bench.python_paths
	$(BIN)/python -m bench.growth
	$(BIN)/python -m bench.bulk
	$(BIN)/python -m bench.upsert
	$(BIN)/python -m bench.deployment
	$(BIN)/python -m bench.plot

bench-rotate-keys: $(STAMP)
	$(BIN)/python -m bench.rotate_keys

system-deps:
	scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
