PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]" --config-settings editable_mode=strict
	touch $(STAMP)

demo: install
	$(BIN)/focalbench train experiment=demo

test: install
	$(BIN)/pytest tests

lint: install
	$(BIN)/ruff check focalbench tests scripts
	$(BIN)/ruff format --check focalbench tests scripts

bench: install
	$(BIN)/python scripts/bench_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info
