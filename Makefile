# skiff: every entry point a developer or CI needs.
#   make setup   install system packages, the virtualenv, generated protos, the shim
#   make run     setup, build the demo image, start skiffd, run a container
#   make test    setup, then the whole test suite (unit, kernel, end to end)
#   make check   lint (ruff), types (mypy), protos in sync with the generated code

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTO_FILES := $(shell find protos -name '*.proto' | sort)
APT_PACKAGES := busybox-static iproute2 util-linux gcc libc6-dev systemd openssl iptables docker-registry skopeo umoci
SHIM := services/execsvc/shim/skiff-shim
# PID 1 for `run --init`; static, because images such as busybox have no libc.
INIT := services/execsvc/shim/skiff-init
DEMO_IMAGE := build/busybox.tar
DATA_ROOT ?= /var/lib/skiff
EXEC_ROOT ?= /run/skiff

.PHONY: setup apt venv protos shim check-protos check lint typecheck test test-unit test-kernel test-e2e run stop clean bench

setup: apt venv shim

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.deps: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	touch $@

# The project itself, editable; needs the generated packages to exist first.
$(VENV)/.installed: $(VENV)/.deps build/gen/.stamp pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# `skiff` itself: a launcher that tries the lean client under python -I -S (see the file).
$(VENV)/.launcher: $(VENV)/.installed deploy/skiff-launcher.py
	sed -e "s|@PYTHON@|$(abspath $(PY))|" -e "s|@LEAN@|$(abspath cli/lean)|" deploy/skiff-launcher.py > $(VENV)/bin/skiff
	chmod 755 $(VENV)/bin/skiff
	touch $@

venv: $(VENV)/.installed $(VENV)/.launcher

# Python code for the protos, generated into build/gen (mapped to skiff.<area>.v1).
build/gen/.stamp: $(PROTO_FILES) protos/generate.py $(VENV)/.deps
	$(PY) protos/generate.py gen build/gen
	touch $@

protos: build/gen/.stamp

check-protos: protos
	$(PY) protos/generate.py check build/gen

$(SHIM): services/execsvc/shim/shim.c services/execsvc/shim/cinit.c services/execsvc/shim/cinit.h
	gcc -O2 -Wall -Wextra -o $@ services/execsvc/shim/shim.c services/execsvc/shim/cinit.c

$(INIT): services/execsvc/shim/skiff-init.c
	gcc -static -O2 -Wall -Wextra -o $@ $<

shim: $(SHIM) $(INIT)

lint: venv
	$(VENV)/bin/ruff check services cli tests protos bench

# mypy sees the installed layout (skiff.*) through a tree of links in build/mypy.
typecheck: venv
	rm -rf build/mypy && mkdir -p build/mypy/skiff
	for p in common apiserver graphsvc execsvc netsvc supervisor; do ln -s ../../../services/$$p build/mypy/skiff/$$p; done
	ln -s ../../../cli build/mypy/skiff/cli
	for a in types api graph exec net; do ln -s ../../gen/skiff/$$a build/mypy/skiff/$$a; done
	cd build/mypy && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p skiff

check: lint typecheck check-protos

$(DEMO_IMAGE): deploy/mkimage-busybox.sh
	mkdir -p build
	deploy/mkimage-busybox.sh $@

test: setup $(DEMO_IMAGE) check
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

test-unit: setup
	$(VENV)/bin/pytest -q tests/unit

test-kernel: setup $(DEMO_IMAGE)
	$(VENV)/bin/pytest -q tests/kernel

test-e2e: setup $(DEMO_IMAGE)
	$(VENV)/bin/pytest -q tests/e2e

# Side by side with Docker and Podman (never part of `make test`); see bench/bench.py.
bench: setup $(DEMO_IMAGE)
	@for p in docker.io podman debootstrap; do dpkg -s $$p >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p >/dev/null; }; done
	$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	$(PY) bench/bench.py $(BENCH_ARGS)

run: setup $(DEMO_IMAGE)
	bash deploy/demo.sh

stop:
	bash deploy/demo.sh stop

clean:
	rm -rf build $(VENV) $(SHIM) $(INIT)
