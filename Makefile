# The two commands of the README:
#   make run    install into .venv and start the backend with the explorer page
#   make test   install into .venv (with test tools) and run lint, format check and all tests,
#               then the backend-sensitive ones (pytest marker `backends`) again on JAX
# Everything installs into the project's own virtual environment; nothing before is needed but
# Python >= 3.11 and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
HOST ?= 127.0.0.1
PORT ?= 8765
PYTEST_ARGS ?=

.PHONY: run test lint install install-test clean

run: $(STAMP)
	$(BIN)/python -m wga serve --host $(HOST) --port $(PORT)

test: $(TEST_STAMP)
	bash scripts/ensure_chromium.sh
	$(MAKE) lint
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -m backends $(PYTEST_ARGS) || test $$? -eq 5

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(STAMP)
install-test: $(TEST_STAMP)

$(BIN)/python:
	bash scripts/make_venv.sh "$(PYTHON)" "$(VENV)"

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[tensorflow]'
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[tensorflow,test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
