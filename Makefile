# Quickstart targets. Each creates .venv (if needed), installs torch and fastsmooth (building
# the C++ / CUDA extension against that torch), then runs its job.
#
#   make demo    the main job: train (cached) and certify column smoothing on real MNIST digits
#   make test    the test suite, and every code block of README.md and docs/ (Sybil)
#   make docs    the documentation site (mkdocs build --strict into site/)
#   make bench   the benchmarks (pytest-benchmark)
#   make gpu-check  on a GPU machine: CUDA build, tests with the CUDA backend required, op
#                   self-check, papers'-size benchmark rows (see .ci/gpu-check; not part of CI)
#
# TORCH / TRITON choose the torch build: the default pins the release these were tested with.
# On a CUDA machine use e.g. `make test TORCH=torch TRITON=` (PyPI's Linux torch is a CUDA build
# and brings its own triton); nvcc and CUDA_HOME must be set for the CUDA kernels to build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TRITON ?= triton==3.8.0
BIN := $(VENV)/bin
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
SOURCES := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
STAMP := $(VENV)/.fastsmooth-installed
DOCS_STAMP := $(VENV)/.fastsmooth-docs-installed

.PHONY: demo test docs bench gpu-check clean

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH) $(TRITON) setuptools wheel ninja numpy
	$(BIN)/pip install --quiet --no-build-isolation -e ".[test,demo,art,ray,vit]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fastsmooth demo

test: $(STAMP)
	$(BIN)/python -m pytest tests README.md docs -q

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --no-build-isolation -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/fastsmooth bench

# Installs nothing: PYTHON must hold a CUDA build of torch (a GPU machine may have no network).
gpu-check:
	PYTHON=$(GPU_PYTHON) .ci/gpu-check

clean:
	rm -rf $(VENV) build site *.egg-info fastsmooth/_C*.so
