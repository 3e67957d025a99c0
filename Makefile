# `make test` works on a machine that has only Python 3.11 and pip:
# it creates .venv, installs edgenum with the pinned CPU build of torch, and runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-edgenum
EXTRAS := dev,models

.PHONY: test install bench clean

test: $(STAMP)
	$(PY) -m pytest -n 2

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) bench/expp.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
