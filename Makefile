# Two commands do all the set-up: `make run` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test check lint typecheck imports builddeps sysdeps clean fuzz bench bench-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# pip compiles callrec's G.722 decoder (src/callrec/codecs/_g722.c); an editable install does
# not rebuild it by itself when the C file changes, so the stamp depends on it.
$(STAMP): pyproject.toml src/callrec/codecs/_g722.c | $(BIN)/python builddeps
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/callrec serve

# Debian packages the tests use, one line per need; installed only when missing.
APT_PACKAGES := ffmpeg# the reference decoder and "standard reader" of the audio tests
APT_PACKAGES += chromium fonts-dejavu-core# headless browser of the web UI tests, driven by Playwright (issue 4)
APT_PACKAGES += sip-tester baresip# SIP interop: sipp scenarios and a real softphone (issue 6)
APT_PACKAGES += postgresql# initdb + postgres: throwaway clusters of the fault tests (issue 12)
APT_PACKAGES += espeak-ng# spoken test recordings for the transcription tests and benchmark (issue 18)
APT_PACKAGES += rtpengine-daemon# the ingest benchmark's second peer, run for real by tests/bench (issue 20)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# A C compiler and the headers of the Python that builds the venv, when either is missing.
builddeps:
	@missing=""; command -v cc >/dev/null 2>&1 || missing="gcc libc6-dev"; \
	$(PYTHON) -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests tools benchmarks fuzz
	$(BIN)/ruff format --check src tests tools benchmarks fuzz

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

# The shape of the code: no import cycles, no forbidden arrows (docs/architecture.md).
imports: $(STAMP)
	$(BIN)/python tools/check_imports.py

check: lint typecheck imports

test: $(TEST_STAMP) sysdeps check
	$(BIN)/pytest -q

# Coverage-guided fuzzing (atheris), each target for FUZZ_SECONDS; not part of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(sort $(wildcard fuzz/*_target.py))
fuzz: $(TEST_STAMP)
	$(BIN)/pip install -q -e '.[fuzz]'
	@mkdir -p fuzz/artifacts
	@for t in $(FUZZ_TARGETS); do \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  $(BIN)/python $$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/artifacts/ \
	    -print_final_stats=1 || exit 1; \
	done

# Ingest benchmark (issue 5): callrec, then one GStreamer pipeline per call, then one
# rtpengine (userspace, pcap per call), same load, the three side by side and each peer's
# CPU-per-call ratio; a few minutes. Not part of `make test`. (No rtpengine-recording-daemon:
# it reads the kernel module's /proc/rtpengine, which a container cannot load.)
BENCH_APT := gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-libav rtpengine-daemon
BENCH_ARGS ?= --calls 300 --seconds 20 --server-args "--workers 2" --peer-calls 100
bench-deps:
	@$(MAKE) --no-print-directory sysdeps APT_PACKAGES="$(BENCH_APT)"
	$(BIN)/pip install -q -e '.[bench]'
bench: $(STAMP) bench-deps
	$(BIN)/python benchmarks/ingest.py $(BENCH_ARGS) --peer

clean:
	rm -rf $(VENV) build *.egg-info
