# vmaudit: the two commands a new user types are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := libguestfs-tools python3-guestfs python3-hivex libhivex-bin qemu-utils \
	e2fsprogs fdisk debootstrap ntfs-3g lvm2 python3-venv dpkg-dev xz-utils \
	rpm systemd-journal-remote wimtools chromium cryptsetup-bin btrfs-progs db-util \
	libvirt-daemon-system libvirt-clients python3-libvirt postgresql nftables iptables distro-info-data \
	systemd util-linux
export LIBGUESTFS_BACKEND ?= direct

.PHONY: setup deb venv test test-fast lint demo fixtures bench clean

setup: deb venv

deb:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

fixtures: setup
	$(PY) fixtures/build.py build/datastore

test: setup
	$(PY) -m pytest -q -ra --durations=25

test-fast: setup
	$(PY) -m pytest -q -ra -m 'not appliance'

lint: setup
	$(VENV)/bin/ruff check vmaudit tests fixtures bench
	$(VENV)/bin/ruff format --check vmaudit tests fixtures bench
	$(VENV)/bin/mypy --strict

DEMO_SCAN := $(VENV)/bin/vmaudit scan build/datastore --inventory fixtures/inventory.yaml \
	-b default -b fixtures/demo-baseline.yaml -b fixtures/demo-windows-baseline.yaml \
	--state build/demo-state.db --feeds-db build/demo-feeds.db
# The demo's feeds: OSV records built from the shared extracts' facts, and the real MSRC
# CVRF months where the shared folder is beside the checkout.
DEMO_FEEDS := fixtures/feeds/osv $(wildcard ../shared/vulndata/windows/msrc-cvrf/*.xml.zst)

demo: fixtures
	$(VENV)/bin/vmaudit feeds import $(DEMO_FEEDS) --db build/demo-feeds.db
	$(DEMO_SCAN); rc=$$?; \
	  echo "vmaudit scan exit code: $$rc (1 = findings at or above --fail-on, the demo's point)"; \
	  test $$rc -le 1

# The peer of issue 21: dissect.target (target-query) from PyPI, in the project's venv.
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

bench: fixtures $(VENV)/.bench-installed
	$(PY) bench/bench.py --fleet
	-$(PY) bench/feeds_bench.py  # exits 1 over its goals; the figures print either way
	-$(PY) bench/gate_bench.py  # prints each decision's time; exits 1 over the 200 ms goal

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
