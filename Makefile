# edge-infer: set-up, tests, model export and benchmarks. Everything runs in ./.venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared

.PHONY: help install run test test-fast system-test arm64-check contract-check docs model bench bench-model clean

help:
	@echo "make run          install, then run the daemon on config/local.yaml (drop images into var/inbox)"
	@echo "make install      create $(VENV) with the runtime, export, test and docs dependencies"
	@echo "make test         install, then run the whole test suite (what CI runs)"
	@echo "make test-fast    the same without the tests marked slow (pytest --markers says which)"
	@echo "make system-test  (root) boot Debian under systemd-nspawn; install.sh and the unit under real systemd"
	@echo "make arm64-check  (root) install and classify in an arm64 Debian under qemu; top-1 vs this machine"
	@echo "make docs         the manual as a site in site/ (installs the docs extra into $(VENV) if missing)"
	@echo "make model        re-export the embedded int8 model from $(SHARED) (weights + photos)"
	@echo "make bench        end to end: the daemon vs the naive serial loop vs classify, on $(SHARED)'s photos"
	@echo "make bench-model  model-only latency: int8 vs fp32 vs the Model Zoo peer, side by side"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is the CPU build; see pyproject.toml's export extra.
	$(PY) -m pip install --quiet -e '.[export,camera,mqtt,dev,docs]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/edge-infer run -c config/local.yaml

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not system"

# Needs root, debootstrap and systemd-nspawn (.ci/install-system-deps); ~3 min, plus ~1.5 min once for the
# root file system (cached under ~/.cache/edge-infer).
system-test: install
	$(PY) -m pytest -q -m system tests/system

# Needs root, debootstrap and qemu-user-static; ~7 min the first time (debootstrap and pip under emulation).
arm64-check: install
	PY=$(abspath $(PY)) EDGE_INFER_SHARED=$(abspath $(SHARED)) tests/system/arm64-check.sh

contract-check: install
	PY=$(abspath $(PY)) $(SHARED)/checks/contract-check

# In the package's own venv: the config reference is generated from the installed package's schema.
docs: install
	$(PY) -c "import mkdocs, material" 2>/dev/null || $(PY) -m pip install --quiet -e '.[docs]'
	$(PY) docs/gen_config_reference.py
	$(PY) -m mkdocs build --strict

build/model/model.onnx: $(VENV)/.installed
	$(PY) -m edge_infer export --weights $(SHARED)/weights/mobilenet_v2_imagenet1k.pth \
	    --images $(SHARED)/images/imagenet-samples --labels-csv $(SHARED)/images/imagenet-samples/labels.csv \
	    --class-names $(SHARED)/labels/imagenet1k_labels.txt --out build/model

model: $(VENV)/.installed
	rm -rf build/model
	$(MAKE) build/model/model.onnx
	cp build/model/model.onnx build/model/model.json edge_infer/models/
	@echo "embedded model updated: commit edge_infer/models/"

bench: install
	$(PY) -m edge_infer bench --images $(SHARED)/images/imagenet-samples --rounds 5

bench-model: build/model/model.onnx
	$(PY) -m edge_infer bench --model-only --images $(SHARED)/images/imagenet-samples \
	    --model int8=edge_infer/models/model.onnx --model fp32=build/model/fp32/model.onnx \
	    --model zoo-int8=$(SHARED)/models/onnx-zoo-mobilenetv2-12-int8.onnx

clean:
	rm -rf build site .pytest_cache
