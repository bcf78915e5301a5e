# Two commands for a fresh machine (see README.md):
#   make main   install into .venv, then run every stage on the embedded default (papermill)
#   make test   install into .venv, then check format and lint (ruff), run the unit tests and the notebooks
#               on `smoke` (nbval), then check the smoke numbers against results/expected/smoke.yaml
#   make bench  the heavy benchmarks kept out of make main (stage 04's 100k / 1M scale benchmark)
#   make seeds  the default profile's other training seeds (mean +- std, paired tests): results/default/seeds.md
#   make paper  (GPU, data downloaded first) the paper sweep: MSCOCO / Flickr30k x BLIP / ALBEF,
#               then the expected-values check and results/paper/summary.md (README "The paper path")
# Installation (README "Installation details"):
#   make setup          the exact, hash-checked versions in requirements.lock (Linux, Python 3.11,
#                       CPU torch 2.13.0), then this package with --no-deps; every target runs it
#   LOCK=0 make ...     unlocked: the newest releases pyproject.toml allows (torch from TORCH_SPEC
#                       unless .venv already has one); give LOCK=0 to every command that should keep it
#   make lock           recompile requirements.lock from pyproject.toml, keeping its pins where they
#                       still fit (UPGRADE="transformers tokenizers": newest allowed releases of those);
#                       pip-tools lives in .lock-tools/
# torch on a GPU: install a CUDA build of torch 2.13.0 into .venv first; it satisfies the lock's
# `torch==2.13.0` pin and is kept (another torch version: LOCK=0 TORCH_SPEC=...).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK ?= 1
LOCK_FILE := requirements.lock
LOCK_TOOLS ?= .lock-tools
TORCH_SPEC ?= torch==2.13.0

.PHONY: data-scale setup lock main bench seeds test smoke paper paper-dry-run report lab

# One stamp per way of installing, so switching between them reinstalls.
ifeq ($(LOCK),0)
STAMP := $(VENV)/.installed-unlocked
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed $(VENV)/.installed-unlocked
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,lab]"
	touch $@
else
STAMP := $(VENV)/.installed
$(STAMP): $(LOCK_FILE) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed $(VENV)/.installed-unlocked
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK_FILE)
	$(PY) -m pip install -q --no-deps -e .
	touch $@
endif

setup: $(STAMP) node_modules/.package-lock.json $(VENV)/.lab-installed

# The Jupyter kernel `lsr` ("Python (lsr_lib)") that the notebooks name, and the nbstripout git filter of
# .gitattributes: notebooks are stored without outputs, so working in JupyterLab leaves `git status` clean
# (lsr_lib/run/lab.py).
$(VENV)/.lab-installed: $(STAMP) lsr_lib/run/lab.py .gitattributes
	$(PY) -m lsr_lib.run.lab --setup
	touch $@

# The emoji art sets and annotations of the embedded default (data/README.md): npm packages, pinned with their
# sha512 integrity hashes in package-lock.json, installed by `npm ci` into node_modules/ (nothing at run time).
node_modules/.package-lock.json: package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js and npm (Debian: apt-get install -y npm), then rerun"; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# pip-compile keeps the pins already in the lock. torch stays at the release of the local CPU wheel
# (a newer one may be a CUDA build); its `+cpu` label is dropped so that a CUDA build of the same
# release, installed first, satisfies the pin too.
lock: $(LOCK_TOOLS)/bin/pip-compile
	$(LOCK_TOOLS)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --extra test --extra lab -P torch==2.13.0 $(foreach p,$(UPGRADE),-P $(p)) \
		-o $(LOCK_FILE) pyproject.toml
	sed -i 's/^torch==\([^+ ]*\)+cpu /torch==\1 /' $(LOCK_FILE)

$(LOCK_TOOLS)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install -q pip-tools==7.6.2

# The main job ends with the expected-values table (results/expected/default.yaml): exit code 1 on FAIL.
main: setup
	$(PY) -m lsr_lib.run.pipeline --profile default
	$(PY) -m lsr_lib.results.report
	$(PY) -m lsr_lib.results.expected --profile default --strict --markdown results/default/expected_check.md

# The heavy benchmarks kept out of `make main`: stage 04 at 100k / 1M documents, every engine, stage 02's models and
# stage 07's chosen one (run `make data-scale` first), into results/default/04_scale.json (committed; stage 04 and
# the README read it while it is current). 3 h 42 min on 2 cores from scratch (docs/efficiency.md); resumes: each
# measured job is kept in results/default/04_measured/scale/ (commit it to carry it over) and measured again only
# when its own model, engine settings or stage 04's code change.
bench: setup
	$(PY) -m lsr_lib.run.pipeline --profile default --stages 04 --force --bench
	$(PY) -m lsr_lib.results.report

# The other training seeds of the default profile (error bars, paired tests): results/default/seed<k>/,
# results/default/seeds.md. Resumes where it stopped; results are committed.
seeds: setup
	$(PY) -m lsr_lib.run.seeds --profile default

# Stage 07 (issue 18), needs `make seeds` first. Part 1, the data-scale study: both D2S conditions on
# 1-100% of the training pairs (about 520 to 52k), every seed (65 min on 2 cores). Part 2, the knob
# search: 7 trials on validation, the choice on every seed, every trial on the latency frontier (an hour
# more from scratch). Writes results/default/07_data_scale.json and 07_knob_search.json; resumes.
data-scale: setup
	$(PY) -m lsr_lib.run.pipeline --profile default --stages 07 --force --bench
	$(PY) -m lsr_lib.results.report

# One format and line length first (pyproject.toml [tool.ruff]; format-only changes keep every code fingerprint).
# The notebooks write results/smoke/; their numbers are then checked against results/expected/smoke.yaml.
test: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	LSR_PROFILE=smoke HF_HUB_OFFLINE=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -q
	$(PY) -m lsr_lib.results.expected --profile smoke --strict

smoke: setup
	$(PY) -m lsr_lib.run.pipeline --profile smoke

paper: setup
	$(PY) -m lsr_lib.run.sweep --profile paper

paper-dry-run: setup
	$(PY) -m lsr_lib.run.sweep --profile paper --dry-run

report: setup
	$(PY) -m lsr_lib.results.report

# JupyterLab at the repository root (runs/, results/, figures/, README.md), opening notebooks/00_start_here.ipynb,
# kernel `lsr`. The notebooks open on PROFILE: make main's `default` unless given (make lab PROFILE=smoke).
# --allow-root: containers often run as root. The post-save hook keeps `git status` clean after the Lab saves
# outputs into a notebook (lsr_lib/run/lab.py).
PROFILE ?= default
lab: setup
	LSR_PROFILE=$(PROFILE) $(VENV)/bin/jupyter lab --allow-root --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb --MappingKernelManager.default_kernel_name=lsr \
		--ContentsManager.post_save_hook=lsr_lib.run.lab.refresh_git_index
