# The README's two commands are `make demo` and `make test`; both set everything up first.
PY_BOOT := $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check retina scripts tests
