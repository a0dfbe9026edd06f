# The course's commands. On a fresh clone:  make run   (or)   make test
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first, pinned, from this machine's wheel cache where there is one; override
# (e.g. TORCH="torch torchvision") to take your platform's build.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
# wheels of what Colab lacks, for the Colab simulation in make test (fetched here, where the network is)
WHEELHOUSE := $(VENV)/wheelhouse

export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: run test check lab venv clean info assignments grade

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH) 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, torchvision"
	$(PY) -m pip install -q -e '.[course,grading,dev]' 2>&1 | grep -v -e "is ignored" -e "BuildBackendWarning" || true
	$(PY) -c "import kdutils, nbval, otter, mnist1d, setuptools"
	$(PY) -c "from kdutils.course import colabsim; colabsim.prepare_wheelhouse('$(abspath $(WHEELHOUSE))')"
	@# grading runs each submission in a bubblewrap sandbox (Debian's bubblewrap package)
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; }; }; } || \
	  echo "note: make grade needs bubblewrap: sudo apt-get install bubblewrap"
	@touch $(STAMP)

## make run: execute every notebook in order on the embedded data; executed copies and HTML in build/
run: $(STAMP)
	$(PY) -m kdutils run

## make test: unit tests, and every notebook executed by nbval at the small "smoke" scale
test: $(STAMP)
	KD_PROFILE=smoke KD_RESULTS_DIR=$(CURDIR)/build/test-results KD_CACHE_DIR=$(CURDIR)/build/test-cache \
	  KD_WHEELHOUSE=$(abspath $(WHEELHOUSE)) MPLBACKEND=Agg \
	  $(PY) -m pytest -q tests --nbval-lax notebooks/[0-9][0-9]_*.ipynb

## make check: what CI runs: make test, then every notebook at the full profile, every claim's assert
## included (KD_SEED=0, the CPU; executed copies in build/check/)
check: test
	KD_PROFILE=full KD_SEED=0 KD_DEVICE=cpu KD_RESULTS_DIR=$(CURDIR)/build/check/results MPLBACKEND=Agg \
	  $(PY) -m kdutils run --out $(CURDIR)/build/check --no-html

## make lab: open JupyterLab in the course's environment
lab: $(STAMP)
	$(PY) -m jupyter lab notebooks

## make assignments: student + autograder versions of every assignment under dist/ (checks the solutions)
assignments: $(STAMP)
	$(PY) -m kdutils assign

## make grade ASSIGNMENT=a1_kd_losses SUBMISSIONS=path/to/folder [TIMEOUT=120] [JOBS=2] [REGRADE=1]
## (each submission in its own bubblewrap sandbox; a rerun grades only what is new or changed)
grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade ASSIGNMENT=<name> SUBMISSIONS=<folder>"; exit 2; }
	@ls dist/$(ASSIGNMENT)/autograder/*.zip >/dev/null 2>&1 || $(PY) -m kdutils assign $(ASSIGNMENT)
	$(PY) -m kdutils grade --assignment $(ASSIGNMENT) --submissions $(SUBMISSIONS) --timeout $(or $(TIMEOUT),120) --jobs $(or $(JOBS),2) $(if $(REGRADE),--regrade)

info: $(STAMP)
	$(PY) -m kdutils info

clean:
	rm -rf build dist   # grades/ is never cleaned: it holds the instructor's grade tables
