# Set-up, demo, tests and benchmarks. `make demo` and `make test` each run `make setup` first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := espeak-ng sox libsox-fmt-all
CALLS ?= 500
MODEL ?= base  # make loadtest MODEL=yue-base-synth

.PHONY: setup system-deps demo test test-fast bench corpus finetune eval loadtest lint clean

setup: system-deps $(VENV)/.installed
	$(PY) -m voice models pull

system-deps:
	@missing=""; for cmd in espeak-ng sox; do command -v $$cmd >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

# torch is installed first, pinned, so pip takes the local CPU build instead of downloading CUDA.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $@

demo: setup
	$(PY) -m voice demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m eval.bench --out BENCHMARKS.md

corpus: setup
	$(PY) -m voice data synth --calls $(CALLS) --out recordings/synth
	$(PY) -m voice data check recordings/synth/manifest.jsonl

finetune: setup
	test -f recordings/synth/manifest.jsonl || $(MAKE) corpus
	$(PY) -m finetune --manifest recordings/synth/manifest.jsonl --out models/yue-base-synth --force

eval: setup
	$(PY) -m voice eval recordings/synth/test.jsonl --model base --model yue-base-synth --seen-in recordings/synth/manifest.jsonl --report reports/eval

loadtest: setup
	$(PY) -m voice.server.loadtest --out BENCHMARKS.md --model $(MODEL)

lint: setup
	$(VENV)/bin/ruff check voice finetune eval tests scripts
	$(VENV)/bin/ruff format --check voice finetune eval tests scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
