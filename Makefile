# `make test` works on a machine that has only Python 3.11 and pip:
# it creates .venv, installs edgenum with the pinned CPU build of torch, and runs the suite.
# `make study` uses the same .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-edgenum
EXTRAS := dev,models,notebooks

.PHONY: test study install bench clean

test: $(STAMP)
	$(PY) -m pytest -n 2

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
