# trueup: `make demo` runs the main job, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,postgres,cli,alpaca,ib,kite,sinks

.PHONY: venv test unit soak demo bench bench-quick lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check trueup tests
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -m 'not soak'

soak: venv
	$(PY) -m pytest -q -m soak

demo: venv
	$(VENV)/bin/trueup demo

bench: venv
	$(PY) benchmarks/run.py

bench-quick: venv
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
