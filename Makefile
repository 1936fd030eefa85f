# diffuse-spec: every entry point sets itself up on a fresh machine.
#
#   make check     replay every golden case (fixtures/, ../shared/golden/v1 and lightning) and print the table
#   make test      the whole test suite (unit, golden, property, malformed inputs, the spec
#                  restatement and exporter, the libtorch-free verify), then `make port`; what CI runs
#   make port      the PyTorch port of ports/torch against every fixture, through the libtorch-free verify
#   make fixtures  regenerate fixtures/ from the JAX restatement in spec/, then fixtures/MANIFEST.sha256
#   make manifest  rewrite fixtures/MANIFEST.sha256 (SHA-256 of every file; `check` verifies it)
#   make dino-xcheck  rewrite fixtures/dino_torch: REPA's DINOv2 against torch's pipeline (docs/dino.md)
#   make fuzz      run the fuzz targets of fuzz/ for FUZZ_SECONDS each (cargo-fuzz, stable + RUSTC_BOOTSTRAP)
#   make bench     criterion benchmarks
#   make demo      train SiT / EDM / MeanFlow / sCT on a 2-D toy, sample with every sampler, score and plot
#                  (examples/toy.rs; figures in target/demo/, the composite copied to docs/toy.png)
#
# libtorch 2.11.0 comes from PyPI's torch==2.11.0, installed once into a per-user
# virtualenv cache ($(CACHE)), which tch's build finds via LIBTORCH_USE_PYTORCH=1.
# Users with their own libtorch 2.11.0 can skip all this: `LIBTORCH=/path cargo build`.

SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/diffuse-spec
TORCH_VENV ?= $(CACHE)/torch-2.11.0
SPEC_VENV ?= $(CACHE)/jax-0.5.1
PYTHON ?= python3
GOLDEN ?= ../shared/golden/v1 ../shared/golden/lightning ../shared/golden/dino
CARGO ?= cargo

ifeq ($(origin LIBTORCH), undefined)
export VIRTUAL_ENV := $(TORCH_VENV)
export PATH := $(TORCH_VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
TORCH_STAMP := $(TORCH_VENV)/.installed
else
TORCH_STAMP :=
endif
# The spec environment, for tests that run the JAX exporter and the schema checks (`make test`
# installs it; a plain `cargo test` skips those tests when it is absent).
export DIFFUSE_SPEC_PYTHON ?= $(SPEC_VENV)/bin/python
# The libtorch-free build (`--no-default-features`): verify and manifest only.
NOTORCH_DIR := target/notorch
NOTORCH_BIN := $(NOTORCH_DIR)/debug/diffuse-spec

.PHONY: check test fixtures manifest fuzz bench build spec-env torch-env clean-env demo notorch port dino-xcheck gpu-kit

$(TORCH_VENV)/.installed:
	@echo "== installing torch==2.11.0 (libtorch for tch) into $(TORCH_VENV)"
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install -q torch==2.11.0 numpy
	$(TORCH_VENV)/bin/python -c "import torch; assert torch.__version__.split('+')[0] == '2.11.0', torch.__version__"
	touch $@

torch-env: $(TORCH_STAMP)

# pytest for the port suite (ports/torch), the one package added to the torch virtualenv.
PYTEST_VERSION := 8.4.2
$(TORCH_VENV)/.pytest-$(PYTEST_VERSION): $(TORCH_VENV)/.installed
	$(TORCH_VENV)/bin/pip install -q pytest==$(PYTEST_VERSION)
	touch $@

$(SPEC_VENV)/.installed: spec/requirements.txt
	@echo "== installing the spec environment (jax 0.5.1) into $(SPEC_VENV)"
	$(PYTHON) -m venv $(SPEC_VENV)
	$(SPEC_VENV)/bin/pip install -q -r spec/requirements.txt
	touch $@

spec-env: $(SPEC_VENV)/.installed

build: torch-env
	$(CARGO) build --release --bin diffuse-spec

check: build
	./target/release/diffuse-spec check fixtures $(wildcard $(GOLDEN))
	@for g in $(GOLDEN); do [ -d "$$g" ] || echo "note: $$g not found; not checked"; done

notorch:
	$(CARGO) build --no-default-features --bin diffuse-spec --target-dir $(NOTORCH_DIR)

# DIFFUSE_SPEC_STRICT turns "skipped: the spec environment / the libtorch-free binary is
# missing" into a failure: under `make test` (CI) those tests always run.
test: torch-env spec-env notorch
	DIFFUSE_SPEC_STRICT=1 DIFFUSE_SPEC_NOTORCH_BIN=$(CURDIR)/$(NOTORCH_BIN) $(CARGO) test --no-fail-fast -- --test-threads=2
	$(MAKE) --no-print-directory port

fixtures: spec-env build
	cd spec && $(SPEC_VENV)/bin/python -m diffuse_spec_ref.export --jobs 2 --out ../fixtures/v1
	./target/release/diffuse-spec manifest fixtures

manifest: build
	./target/release/diffuse-spec manifest fixtures

# The spec environment's python (jax, transformers) with the torch environment's torch appended
# to its path: nothing is installed into either. Needs the torch virtualenv (not LIBTORCH=...).
dino-xcheck: spec-env build
	cd spec && $(SPEC_VENV)/bin/python scripts/dino_torch_xcheck.py \
	  --torch-site "$$($(TORCH_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	  --case ../fixtures/v1/dino_encode_b1_288_q19 --out ../fixtures/dino_torch
	./target/release/diffuse-spec manifest fixtures

# The fuzz targets include the pure parsers (src/npy.rs, src/golden/parse.rs) without libtorch.
# cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
FUZZ_SECONDS ?= 120
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	# New inputs go to fuzz/target/corpus-<target> (ignored); the committed corpus stays as is.
	for t in npy case_json; do \
	  mkdir -p fuzz/target/corpus-$$t && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --debug-assertions $$t fuzz/target/corpus-$$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=5 -max_len=65536 || exit 1; \
	done

bench: torch-env
	$(CARGO) bench

demo: torch-env
	$(CARGO) run --release --example toy
	cp target/demo/toy.png docs/toy.png

# The PyTorch port (ports/torch) run over every fixture and checked by `diffuse-spec verify`
# built without libtorch, as a port author would use it.
port: $(TORCH_VENV)/.pytest-$(PYTEST_VERSION) notorch
	DIFFUSE_SPEC_VERIFY=$(CURDIR)/$(NOTORCH_BIN) $(TORCH_VENV)/bin/python -m pytest ports/torch -q

# Release binaries of the CUDA tests and of the step benchmark, for a GPU machine with the same
# torch (2.11.0) in its python3: copy the tree with target/gpu-kit, run benches/gpu-run there.
gpu-kit: torch-env
	mkdir -p target/gpu-kit
	$(CARGO) build --release --example bench_step
	cp target/release/examples/bench_step target/gpu-kit/
	$(CARGO) test --release --no-run --test cuda --test cuda_rng --message-format=json \
	  | $(TORCH_VENV)/bin/python -c 'import json, shutil, sys; [shutil.copy(m["executable"], "target/gpu-kit/" + m["target"]["name"]) for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("cuda", "cuda_rng")]'
	ls -l target/gpu-kit

clean-env:
	rm -rf $(TORCH_VENV) $(SPEC_VENV)
