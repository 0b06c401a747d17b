# Set-up and entry points. `make run` and `make test` install whatever is missing on a fresh Debian machine:
# apt packages (FluidSynth, a GM soundfont, PostgreSQL, Chromium for browser tests) and a .venv with pinned packages.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test test-fast sysdeps browser venv bench prepare stats clean screenshots

run: sysdeps venv
	$(BIN)/python app.py $(ARGS)

# The suite runs on one pytest-xdist worker per core (TEST_WORKERS), each computing on one thread: numpy's
# OpenBLAS, torch's OpenMP and numba otherwise start a spinning thread per core in every worker, and two
# workers on two cores then ran the quick lane 3x slower than one worker instead of faster. loadfile keeps
# each test file on one worker (a module's fixtures are built once); tests/conftest.py starts the slow ones
# first and builds the tiny trained models once for all workers (docs/testing.md).
TEST_WORKERS ?= auto
TEST_ENV := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
TEST_RUN := $(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test: sysdeps browser venv
	$(TEST_RUN) $(PYTEST_ARGS)

# The quick lane while you work: every test not marked slow or browser (pytest.ini), in about a minute.
test-fast: sysdeps venv
	$(TEST_RUN) -m "not slow and not browser" $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): requirements.txt requirements-lock.txt
	$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps encodec==0.1.1
	touch $(STAMP)

# FluidSynth's shared library, a General MIDI soundfont and Python's venv module, from Debian; and Debian's
# PostgreSQL server, which the listening-store tests start as a throwaway cluster (the studio itself needs it
# only when sessions.database is a postgresql:// URL).
sysdeps:
	@if ! dpkg -s libfluidsynth3 fluid-soundfont-gm postgresql >/dev/null 2>&1 || ! $(PYTHON) -c "import ensurepip" 2>/dev/null; then \
		$(APT) update -qq && $(APT) install -y -qq libfluidsynth3 fluid-soundfont-gm python3-venv postgresql; \
	fi

# Debian's Chromium, driven by Playwright in the browser tests (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { $(APT) update -qq && $(APT) install -y -qq chromium; }

prepare: venv
	$(BIN)/python -m engines prepare $(ARGS)

stats: venv
	$(BIN)/python -m engines stats --json

# The README tour's screenshots, taken by the browser tour test with the shipped checkpoints.
screenshots: sysdeps browser venv
	STUDIO_SCREENSHOTS=docs/images STUDIO_BROWSER_CHECKPOINTS=assets/checkpoints \
		$(BIN)/python -m pytest tests/studio -k tour -q

bench: venv
	$(BIN)/python -m engines bench --json out/bench.json

clean:
	rm -rf data/cache/corpus data/cache/*.building
