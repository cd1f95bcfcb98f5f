# Two commands do everything: `make demo` and `make test`. Both build the venv if it is missing.
SHELL := /bin/bash
PYTHON310 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10) $(shell command -v python3.10 2>/dev/null))
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= default
SEED ?= 7
MODEL ?= baseline
# Every greedy-trap strength of the world times this (data_gen/world.py TrapConfig; 0: no trap).
TRAP ?= 1
WARM_START ?= 0
# The lifelong length the models read (empty: models/features.py's default and the checked-in
# schema); set, the demo generates a schema for it under $(WORK). E.g. SCALE=long_history LIFELONG_LEN=10000
LIFELONG_LEN ?=
# Beam runner preset of the pipeline's Beam components (pipeline/beam_presets.py; empty: the
# demo's default in pipeline/configs.py). E.g. BEAM=in_memory, or BEAM=multi_processing
# BEAM_OPTIONS=direct_num_workers=2
BEAM ?=
BEAM_OPTIONS ?=
WORK ?= $(CURDIR)/work
PIPELINE_NAME ?= livestream-ranking
PORT ?= 8500
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONPATH := $(CURDIR)

.PHONY: venv demo test test-fast lint bench clean image vertex

venv: $(VENV)/.installed

$(VENV)/.installed: constraints.txt setup.py
	@test -n "$(PYTHON310)" || { echo "Python 3.10 not found (expected pyenv 3.10.x); set PYTHON310=/path/to/python3.10"; exit 1; }
	$(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==24.2"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

# Generate logs, run the pipeline through the TFX CLI, serve the pushed model, query it over gRPC.
# What local_runner.py reads (WARM_START=1: the Trainer starts from the latest blessed model).
TFX_ENV = LOCAL_HOME=$(WORK)/tfx_home DEMO_WORK=$(WORK) DEMO_MODEL=$(MODEL) DEMO_WARM_START=$(WARM_START)
ifneq ($(BEAM),)
TFX_ENV += DEMO_BEAM=$(BEAM)
endif
ifneq ($(BEAM_OPTIONS),)
TFX_ENV += DEMO_BEAM_OPTIONS=$(BEAM_OPTIONS)
endif
ifneq ($(LIFELONG_LEN),)
TFX_ENV += DEMO_LIFELONG_SEQ_LEN=$(LIFELONG_LEN) DEMO_SCHEMA=$(WORK)/schema.pbtxt
endif
# Each step through pipeline/console.py: one line per step and per component on the console, the
# rest in $(WORK)/console/*.log (a failing step prints its error and its log's path).
STEP = $(PY) -m pipeline.console
CONSOLE = $(WORK)/console
# $(call beside,A,B,name): runs the step A in the background while the step B runs, then prints
# A's console lines after B's; fails with B's exit code, else A's. The demo pairs independent,
# single-threaded steps this way (two cores): it saves ~15 s at each pair.
beside = { $(1) > $(CONSOLE)/$(strip $(3)).console 2>&1 & pid=$$!; $(2); b=$$?; wait $$pid; a=$$?; \
  cat $(CONSOLE)/$(strip $(3)).console; exit $$(( b ? b : a )); }
demo: venv
	@mkdir -p $(CONSOLE)
	@echo "make demo: SCALE=$(SCALE) SEED=$(SEED) TRAP=$(TRAP) MODEL=$(MODEL) WORK=$(WORK) (logs: $(CONSOLE))"
	@$(if $(LIFELONG_LEN),$(STEP) --quiet --name "schema for lifelong length $(LIFELONG_LEN)" \
	  --log $(CONSOLE)/schema.log -- $(PY) -m schemas.make_schema --lifelong_len $(LIFELONG_LEN) \
	  --out $(WORK)/schema.pbtxt)
	@$(call beside,$(STEP) --quiet --name "tfx pipeline create" --log $(CONSOLE)/tfx_pipeline.log \
	  -- bash -c '$(TFX_ENV) $(VENV)/bin/tfx pipeline create --engine local --pipeline_path \
	  local_runner.py || $(TFX_ENV) $(VENV)/bin/tfx pipeline update --engine local \
	  --pipeline_path local_runner.py', \
	  $(PY) -m data_gen.cli --scale $(SCALE) --seed $(SEED) --trap_scale $(TRAP) \
	  --out_dir $(WORK)/logs --reuse, \
	  tfx_pipeline)
	@$(STEP) --tfx --name "tfx run create" --log $(CONSOLE)/tfx_run.log -- \
	  env $(TFX_ENV) $(VENV)/bin/tfx run create --engine local --pipeline_name $(PIPELINE_NAME)
	@$(call beside,$(STEP) --name "serve and rank" --log $(CONSOLE)/serving.log -- \
	  $(PY) -m serving.demo --work $(WORK) --pipeline_name $(PIPELINE_NAME) --port $(PORT), \
	  $(STEP) --name "quality report" --log $(CONSOLE)/quality_report.log -- \
	  $(PY) -m bench.quality_report --work $(WORK) --pipeline_name $(PIPELINE_NAME), \
	  serving)

# Two pytest-xdist workers, one per core; a file's tests stay on one worker (module fixtures such
# as the e2e pipeline run are built once), in collection order (tests/conftest.py puts the long
# e2e file first; xdist would otherwise queue files by test count). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST = $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: venv
	$(PYTEST) tests

test-fast: venv
	$(PYTEST) -m "not e2e" tests

lint: venv
	$(VENV)/bin/ruff check .

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,bench]"
	@touch $@

# Benchmarks (the first two on the data of the last `make demo`: run that first; the serving ones
# build their own synthetic models; beam_scaling generates its own small-scale logs; greedy_trap
# runs the simulator's closed loop on the truth). Run alone:
# they time this machine. Figures: BUILD_NOTES.md.
bench: $(VENV)/.bench-installed
	$(PY) -m bench.ablation_feedback --work $(WORK) --out_dir bench/results \
		--export_base $(WORK)/ablation_models
	$(PY) -m bench.hand_features --work $(WORK) --out_dir bench/results --bootstrap 500
	$(PY) -m bench.mechanism_caps --work $(WORK) --out_dir bench/results \
		--ablation bench/results/ablation_feedback.json --export_base $(WORK)/ablation_models
	$(PY) -m bench.throughput_ple --work $(WORK) --out_dir bench/results
	$(PY) -m bench.serving_latency --out_dir bench/results
	$(PY) -m bench.lifelong_cost --out_dir bench/results
	$(PY) -m bench.load --out_dir bench/results
	$(PY) -m bench.beam_scaling --out_dir bench/results
	$(PY) -m bench.distributed_training --work $(WORK) --out_dir bench/results
	$(PY) -m bench.greedy_trap --out_dir bench/results
	$(PY) -m bench.closed_loop --work $(WORK) --out_dir bench/results

# Vertex AI (README "Run on Vertex AI"): `make image` builds the Dockerfile's image, `make vertex`
# compiles the pipeline for it to $(VERTEX_JSON). No defaults for the image, bucket or project: a
# placeholder would compile, then fail on Vertex.
IMAGE ?=
GCS_ROOT ?=
PROJECT ?=
REGION ?= us-central1
VERTEX_JSON ?= $(WORK)/vertex/pipeline.json

image:
	@test -n "$(IMAGE)" || { echo "make image: set IMAGE, e.g. IMAGE=us-central1-docker.pkg.dev/PROJECT/REPO/livestream-tfx:v1"; exit 1; }
	@command -v docker >/dev/null || { echo "make image: docker is not on PATH; build the image where Docker runs and push it there"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: docker cannot reach a Docker daemon ('docker info' fails)"; exit 1; }
	docker build -t $(IMAGE) .

# The venv is made after the checks, not as a prerequisite, so a missing setting fails first.
vertex:
	@test -n "$(GCS_ROOT)" || { echo "make vertex: set GCS_ROOT, e.g. GCS_ROOT=gs://BUCKET/livestream"; exit 1; }
	@test -n "$(IMAGE)" || { echo "make vertex: set IMAGE to the pushed image (see make image)"; exit 1; }
	@test -n "$(PROJECT)" || { echo "make vertex: set PROJECT, the Google Cloud project of the Dataflow jobs"; exit 1; }
	@$(MAKE) --no-print-directory venv
	@mkdir -p $(dir $(VERTEX_JSON))
	$(PY) kubeflow_v2_runner.py --image $(IMAGE) --gcs_root $(GCS_ROOT) --project $(PROJECT) \
	  --region $(REGION) --model_name $(MODEL) --output $(VERTEX_JSON)

clean:
	rm -rf $(WORK)
