# trueup: `make demo` runs the main job, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,postgres,cli,alpaca,ib,kite,sinks,ops

.PHONY: venv test unit soak demo bench bench-quick lint clean prometheus

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check trueup tests
	$(VENV)/bin/mypy

# promtool (alert-rule unit tests) and prometheus (the end-to-end scrape) from Debian's package.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v promtool >/dev/null && command -v prometheus >/dev/null

test: lint prometheus
	$(PY) -m pytest -q -m 'not soak'

soak: venv prometheus
	$(PY) -m pytest -q -m soak

demo: venv
	$(VENV)/bin/trueup demo

bench: venv
	$(PY) benchmarks/run.py

bench-quick: venv
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
