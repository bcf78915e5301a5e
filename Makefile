# Two commands for a fresh machine (see README.md):
#   make main   install into .venv, then run every stage on the embedded default (papermill)
#   make test   install into .venv, then run the unit tests and the notebooks on `smoke` (nbval)
#   make paper  (GPU, data downloaded first) the paper sweep: MSCOCO / Flickr30k x BLIP / ALBEF,
#               then the expected-values check and results/paper/summary.md (README "The paper path")
# torch: a CPU build is installed only when the venv has no torch yet, so a GPU user can
# install their CUDA torch into .venv first (or set TORCH_SPEC) and keep it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup main test smoke paper paper-dry-run report lab

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,lab]"
	touch $@

setup: $(VENV)/.installed

main: setup
	$(PY) -m lsr_lib.run.pipeline --profile default
	$(PY) -m lsr_lib.results.report

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests notebooks --nbval-lax -q

smoke: setup
	$(PY) -m lsr_lib.run.pipeline --profile smoke

paper: setup
	$(PY) -m lsr_lib.run.sweep --profile paper

paper-dry-run: setup
	$(PY) -m lsr_lib.run.sweep --profile paper --dry-run

report: setup
	$(PY) -m lsr_lib.results.report

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
