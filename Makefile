# Two entry points: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0
# Elsewhere, point pip at a CPU wheel index, e.g. TORCH_PIP_ARGS='--index-url <cpu index>'.
TORCH_PIP_ARGS ?=

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Without a GPU, install the CPU build first so that the open torch requirement
	# resolves locally instead of pulling a multi-GB CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q $(TORCH_CPU) $(TORCH_PIP_ARGS); \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llmsim run scenarios/chatbot_a10g.yaml

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check simulator backend calibration tests benchmarks

clean:
	rm -rf $(VENV) results
