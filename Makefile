# Office PBX appliance. `make run` and `make test` install what is missing (as root on Debian 12).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PBX := $(VENV)/bin/pbx
APT_PACKAGES := kamailio kamailio-sqlite-modules kamailio-presence-modules kamailio-websocket-modules kamailio-tls-modules rtpengine-daemon \
	sip-tester baresip-core sipsak sox ffmpeg espeak-ng sqlite3 iproute2 keepalived nftables \
	python3-venv python3-dev gcc libasound2-dev systemd chromium fonts-dejavu-core linphone-cli rauc
DATA ?= var

.PHONY: all deps sysdeps pydeps run test bench ha-bench clean prompts security

all: deps

# System packages: only what is missing, so a second run costs nothing.
sysdeps: .stamp-sysdeps
.stamp-sysdeps: Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root (apt-get install$$missing)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

pydeps: .stamp-pydeps
.stamp-pydeps: pyproject.toml .stamp-sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c 'import aiosipua, uvloop, tinydb' || { echo "error: Python packages did not install; see pip output above"; exit 1; }
	@touch $@

prompts: .stamp-pydeps
	@$(PY) -m services.media.prompts

deps: .stamp-sysdeps .stamp-pydeps prompts

run: deps
	@$(PBX) run --data $(DATA) --demo

test: deps
	@$(PY) -m pytest -q -n 2 --dist loadfile tests; rc=$$?; [ $$rc = 5 ] && { echo "no tests collected"; exit 1; }; exit $$rc

# The security suite alone, with a longer fuzz (PBX_FUZZ_COUNT messages; PBX_FUZZ_SEED=N repeats a run).
PBX_FUZZ_COUNT ?= 50000
security: deps
	@PBX_FUZZ_COUNT=$(PBX_FUZZ_COUNT) $(PY) -m pytest -q -rA -p no:cacheprovider tests/security \
	  tests/test_edge_security.py tests/test_media_attacks.py tests/test_webui_attacks.py

bench: deps
	@$(PY) -m tests.bench.run
	@$(PY) -m tests.bench.relay_floor
	@$(PY) -m tests.bench.media_features
	@$(PY) -m tests.bench.queues
	@$(PY) -m tests.bench.kernel_media
	@$(PY) -m tests.bench.soak --calls 10000

# memory of every PBX process over 100,000 short calls (issue 16); table in docs/benchmarks.md
.PHONY: soak
soak: deps
	@$(PY) -m tests.bench.soak --calls 100000

# failover: each way the primary can fail, in network namespaces (root); table in docs/benchmarks.md
ha-bench: deps
	@$(PY) -m tests.bench.ha

clean:
	rm -rf .stamp-* build *.egg-info

# ---- The appliance image (image/, docs/decisions/021-image.md) --------------------------------
# `make image` builds build/image/{amd64,arm64}/pbx-VERSION-ARCH.img.xz (+ .sha256, .manifest) from
# Debian 12 packages; IMAGE_ARCHES=amd64 builds one. `make image-test` boots the amd64 root with
# systemd-nspawn, calls through it and cuts its power IMAGE_POWER_CUTS times; `make test` runs that
# file too only when PBX_IMAGE_TEST=1 is set (it takes many minutes; CI sets it on the image job).
IMAGE_ARCHES ?= amd64 arm64
IMAGE_POWER_CUTS ?= 100
IMAGE_TOOLS := mmdebstrap systemd-container dosfstools mtools fdisk e2fsprogs xz-utils qemu-user-static binfmt-support arch-test \
	qemu-system-x86 ovmf rauc squashfs-tools

.PHONY: image image-test image-tools image-repro bundle

image-tools:
	@missing=""; for p in $(IMAGE_TOOLS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing image tools:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root (apt-get install$$missing)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

image: image-tools
	@for a in $(IMAGE_ARCHES); do image/build.sh $$a || exit 1; done

# builds the amd64 root twice (build/image/repro-amd64/{1,2}, up to root.ext4) and compares them;
# IMAGE_REPRO_FULL=1 compares boot.vfat, data.ext4 and the whole .img too
image-repro: image-tools
	@image/repro.sh amd64 $(if $(IMAGE_REPRO_FULL),--full)

# a signed RAUC bundle of the amd64 root (BUNDLE_ARCH=arm64 for the Pi) for `pbx update install`
# or the System page; keys in build/image/keys (a development CA made on the first build) or
# PBX_IMAGE_KEYS=DIR (README, "Updates")
BUNDLE_ARCH ?= amd64
bundle: image-tools
	@image/build.sh $(BUNDLE_ARCH) --root-ext4 && image/bundle.sh $(BUNDLE_ARCH)

image-test: image-tools deps
	@PBX_IMAGE_TEST=1 PBX_IMAGE_POWER_CUTS=$(IMAGE_POWER_CUTS) $(PY) -m pytest -q -s -p no:cacheprovider -n 0 tests/test_image.py tests/test_image_update.py
