# `make test` works on a machine that has only Python 3.11 and pip:
# it creates .venv, installs edgenum with the pinned CPU build of torch, lints, builds the docs
# (warnings are errors) and runs the suite. `make study` and `make docs` use the same .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-edgenum
EXTRAS := dev,models,notebooks,docs,cluster,explore

.PHONY: test lint docs study install bench clean

test: lint docs
	$(PY) -m pytest -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# the reference site (hardware pages and the API from the docstrings) in build/site
docs: $(STAMP)
	$(PY) -m mkdocs build --strict

# the default study: MiniLM on fp32 and the four targets; table on stdout, CSV/JSON/PNG in out/study/
study: $(STAMP)
	$(PY) -m hwmodels study --out out/study

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) bench/expp.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
