# The course's commands. On a fresh clone:  make run   (or)   make test
# Both create the virtual environment .venv on first use. While editing kdutils: make unit (minutes).

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

.PHONY: run unit test check lab venv clean info assignments grade site site-check

# pytest as the tests run it: the smoke profile, results and caches under build/ (never ~/.cache)
LINT   := $(VENV)/bin/ruff check --quiet
PYTEST := env HF_HUB_OFFLINE=1 KD_PROFILE=smoke KD_RESULTS_DIR=$(CURDIR)/build/test-results KD_CACHE_DIR=$(CURDIR)/build/test-cache \
  KD_WHEELHOUSE=$(abspath $(WHEELHOUSE)) MPLBACKEND=Agg $(PY) -m pytest -q
# make check's stages are timed into this table (.ci/stages.py: the standard library only, so it can
# time the stage that creates the environment)
TIMINGS := build/check/timings.json
STAGE   := $(PYTHON) .ci/stages.py run $(TIMINGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH) 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, torchvision"
	$(PY) -m pip install -q -e '.[course,grading,site,hf,dev]' 2>&1 | grep -v -e "is ignored" -e "BuildBackendWarning" || true
	$(PY) -c "import kdutils, nbval, otter, mnist1d, setuptools, myst_nb, playwright, axe_playwright_python, transformers, trl"
	$(PY) -c "from kdutils.course import colabsim; colabsim.prepare_wheelhouse('$(abspath $(WHEELHOUSE))')"
	@# grading runs each submission in a bubblewrap sandbox (Debian's bubblewrap package)
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; }; }; } || \
	  echo "note: make grade needs bubblewrap: sudo apt-get install bubblewrap"
	@# the website's browser check drives Debian's chromium (make site-check)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: make site-check needs Chromium: sudo apt-get install chromium"
	@touch $(STAMP)

## make run: execute every notebook (one per core at once, one thread each) on the embedded data;
## executed copies and HTML in build/
run: $(STAMP)
	$(PY) -m kdutils run

## make unit: the loop while editing kdutils or the tooling: every test that starts no kernel, sandbox,
## browser or other process (pytest -m "not slow"), in a minute or two, after the linter (ruff, pyproject.toml)
unit: $(STAMP)
	$(LINT)
	$(PYTEST) -m "not slow" tests --durations=5

## make test: every test: the unit tests, then the slow suites (every notebook executed once at the smoke
## scale, opened alone on a simulated Colab; the assignments assigned, answered and graded in sandboxes; the
## site in a browser; several processes); prints the 15 slowest
test: $(STAMP)
	$(PYTEST) tests --durations=15

## make check: what CI runs, stage by stage, each timed (the table is printed at the end and kept in
## build/check/timings.json): the environment, every test of make test (unit, then the slow suites), every
## notebook at the full profile with every claim's assert (KD_SEED=0, the CPU, one per core; executed copies
## in build/check/), then the website built from that run and checked in headless Chromium
check:
	@$(PYTHON) .ci/stages.py reset $(TIMINGS)
	@$(STAGE) install -- $(MAKE) --no-print-directory venv
	@$(STAGE) lint -- $(LINT)
	@$(STAGE) "unit tests" -- $(PYTEST) -m "not slow" tests --durations=5
	@$(STAGE) "notebooks at smoke, opened alone on Colab" -- $(PYTEST) tests/test_colab_simulation.py --durations=5
	@$(STAGE) "grading in sandboxes" -- $(PYTEST) -m slow tests/test_grading.py --durations=5
	@$(STAGE) "other slow tests" -- $(PYTEST) -m slow tests --ignore=tests/test_colab_simulation.py \
	  --ignore=tests/test_grading.py --durations=5
	@$(STAGE) "notebooks at full profile" -- env KD_PROFILE=full KD_SEED=0 KD_DEVICE=cpu \
	  KD_RESULTS_DIR=$(CURDIR)/build/check/results $(PY) -m kdutils run --out $(CURDIR)/build/check --no-html
	@$(STAGE) site -- $(MAKE) --no-print-directory site SITE_RUN=build/check
	@$(STAGE) "browser check" -- $(MAKE) --no-print-directory site-check
	@$(PYTHON) .ci/stages.py report $(TIMINGS)

## make site: the course as a static website in build/site/, from the notebooks make run executed
## (make run first only if they are missing; SITE_RUN=build/check takes make check's run instead)
SITE_RUN ?= build
site: $(STAMP)
	@$(PY) -m kdutils site --run $(SITE_RUN) --ready || $(MAKE) run
	$(PY) -m kdutils site --run $(SITE_RUN) --out build/site

## make site-check: open every page of build/site/ in headless Chromium (screenshots in build/site-check/)
site-check: $(STAMP)
	$(PY) -m kdutils site-check build/site --shots build/site-check

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
