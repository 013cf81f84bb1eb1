# The two commands of the README: `make demo` (whole notebook pipeline on the embedded model, CPU)
# and `make test`. Both bootstrap .venv/ first.
PY := .venv/bin/python
PARAMS ?= params/demo.yaml

.PHONY: venv demo control-fit test test-fast lint bench clean-runs wheelhouse

venv:
	@bash scripts/bootstrap.sh

demo: venv
	$(PY) -m medr1 pipeline -f $(PARAMS)

# Fit check (positive control): train on 8 fixed questions, evaluate them in option orders never trained on.
# Its numbers are about training questions, not generalization (params/control-fit.yaml).
control-fit: venv
	$(PY) -m medr1 pipeline -f params/control-fit.yaml

test: venv
	$(PY) -m ruff check medr1 tests benchmarks notebooks
	$(PY) -m pytest tests

test-fast: venv
	$(PY) -m pytest tests -m "not slow"

lint: venv
	$(PY) -m ruff check medr1 tests benchmarks notebooks

bench: venv
	$(PY) benchmarks/run_cpu.py

# On a connected machine: wheels of medr1[gpu] for an offline GPU node (Python 3.12, Linux x86_64), ~6-8 GB.
# Install there with: pip install --no-index --find-links wheelhouse/ 'medr1[gpu]'. See scripts/wheelhouse.py.
wheelhouse:
	python3 scripts/wheelhouse.py --dest wheelhouse

clean-runs:
	rm -rf runs/
