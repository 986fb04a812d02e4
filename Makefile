# SentenceKV Desktop: one-command set-up, run and test.
#   make setup   create .venv, build the patched llama-cpp-python wheel (cached), install everything (idempotent)
#   make run     setup, then start the app (skv-desktop)
#   make test    setup, then run the test suite offscreen
#   make screenshots  regenerate docs/screenshots/ (offscreen)
#   make package  the Linux bundle: dist/sentencekv-desktop-<version>-linux-x86_64.tar.gz
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.skv-setup-stamp
BUILD_FLAGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test lint screenshots package clean-venv

setup:
	@hash=$$( { sha256sum pyproject.toml native/build.py; \
	            find native/patches native/src native/include -type f 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum; \
	            echo "flags=$(BUILD_FLAGS)"; } | sha256sum | cut -c1-32 ); \
	if [ -x "$(VPY)" ] && [ -f "$(STAMP)" ] && [ "$$(cat $(STAMP))" = "$$hash" ]; then \
	  echo "setup: up to date ($(VENV))"; exit 0; fi; \
	start=$$(date +%s); \
	if [ ! -x "$(VPY)" ]; then \
	  $(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
	    || { echo "setup: error: $(PYTHON) is older than 3.11; run make PYTHON=python3.11 setup" >&2; exit 2; }; \
	  echo "setup: creating $(VENV)"; $(PYTHON) -m venv $(VENV); fi; \
	echo "setup: installing build tools"; \
	build_deps="scikit-build-core>=0.9.2"; \
	command -v cmake >/dev/null || build_deps="$$build_deps cmake>=3.21"; \
	command -v ninja >/dev/null || build_deps="$$build_deps ninja"; \
	$(VPY) -m pip install -q --disable-pip-version-check $$build_deps; \
	echo "setup: building the patched llama-cpp-python wheel (cached when unchanged; a cold build takes about 6 min)"; \
	wheel=$$($(VPY) native/build.py $(BUILD_FLAGS)); \
	want=$$(basename "$$wheel" | cut -d- -f2); \
	have=$$($(VPY) -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null || true); \
	if [ "$$have" != "$$want" ]; then \
	  echo "setup: installing llama-cpp-python $$want (was: $${have:-none})"; \
	  $(VPY) -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$$wheel"; \
	  $(VPY) -m pip install -q --disable-pip-version-check "$$wheel"; fi; \
	echo "setup: installing the project and its dependencies"; \
	$(VPY) -m pip install -q --disable-pip-version-check --only-binary=llama-cpp-python -e ".[dev]"; \
	have=$$($(VPY) -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))'); \
	if [ "$$have" != "$$want" ]; then \
	  echo "setup: error: pip replaced our llama-cpp-python $$want with $$have" >&2; exit 1; fi; \
	$(VPY) -c 'import llama_cpp.llama_cpp as l; assert hasattr(l._lib, "llama_skv_version"), "stock libllama"' \
	  || { echo "setup: error: the installed llama_cpp does not load our patched library" >&2; exit 1; }; \
	echo "$$hash" > $(STAMP); \
	echo "setup: done in $$(( $$(date +%s) - start )) s (llama-cpp-python $$want)"

run: setup
	$(VENV)/bin/skv-desktop

test: setup
	QT_QPA_PLATFORM=offscreen $(VPY) -m pytest -q $(PYTEST_ARGS)

screenshots: setup  # docs/screenshots/*.png for the README (offscreen, scripted engine)
	QT_QPA_PLATFORM=offscreen $(VPY) -m pytest -q -p no:cacheprovider tests/support/screenshots.py

package: setup  # dist/sentencekv-desktop-<version>-linux-x86_64.tar.gz (packaging/bundle.py; PyInstaller)
	$(VPY) packaging/bundle.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
