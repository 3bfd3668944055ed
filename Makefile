# The README's two commands are `make demo` and `make test`; both set everything up first.
PY_BOOT := $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-all lint demo

install: $(STAMP)

# constraints.txt pins the exact versions this repository is developed and tested with (CI
# included); pyproject.toml keeps the open ranges a user installs with.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The default suite (slow tests deselected in pyproject.toml), then the slow ones
# (DDP parity through the trainer, SIGKILL resume, the CLI sweep, the conversion round trip).
# pytest's exit status passes through: any failure, or collecting no tests (5), fails make.
# The default suite runs on TEST_WORKERS pytest-xdist workers (one per core of the 2-core
# machines; TEST_WORKERS=0 runs it in one process, like a plain `python -m pytest -q`).
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

test: install
	$(PY) -m pytest -q $(XDIST)

test-slow: install
	$(PY) -m pytest -q -m slow

# What CI runs (.ci/run): both suites, the slow one even when the default one failed, and
# the first non-zero status wins. Each prints its 15 slowest tests.
test-all: install
	@status=0; \
	$(PY) -m pytest -q $(XDIST) --durations=15 || status=$$?; \
	$(PY) -m pytest -q -m slow --durations=15 || { s=$$?; [ $$status -ne 0 ] || status=$$s; }; \
	exit $$status

lint: install
	$(VENV)/bin/ruff check retina scripts tests

# Train the default config (tiny RetinaNet on the synthetic shapes data, generated under
# data/shapes when missing) on the CPU, evaluate it and print the COCO table.
# Results: outputs/demo/metrics.json; curves: tensorboard --logdir outputs/demo/tensorboard
DEMO_DIR := outputs/demo

demo: install
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/retina-train hydra.run.dir=$(DEMO_DIR)
	@echo "metrics: $(DEMO_DIR)/metrics.json   curves: $(VENV)/bin/tensorboard --logdir $(DEMO_DIR)/tensorboard"
