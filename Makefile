# The two commands a newcomer needs: `make demo` (the study in miniature on the embedded mnist-5k) and
# `make test`. Both build .venv with pip the first time; `make docs` builds the documentation site.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-slow docs examples clean

# The package and what it runs with (the demo needs no more).
$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV): pip installs odenet with torch and its other dependencies (once; about 2 minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# The tools of the tests and of the documentation site.
$(VENV)/.installed-dev: $(VENV)/.installed
	@echo "installing the test and documentation tools into $(VENV)"
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/odenet-demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m slow

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

examples: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) examples/own_model.py
	OMP_NUM_THREADS=1 $(PY) examples/nfe_vs_tolerance.py

clean:
	rm -rf $(VENV) runs/demo build/site
