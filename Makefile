# pylvs: the two commands a newcomer needs (run as root; they install what they need):
#   make demo   - sets up and runs the NAT demo on an embedded namespace lab
#   make test   - sets up and runs the unit and integration tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 nftables nginx-light curl wrk iperf3 tcpdump haproxy procps
STAMP := $(VENV)/.installed

.PHONY: demo test deps unit integration lint bench clean

demo: deps
	$(PY) -m pylvs.lab.demo

test: deps
	$(PY) -m ruff check pylvs tests bench
	$(PY) -m pytest -q tests

unit: deps
	$(PY) -m pytest -q tests/unit

integration: deps
	$(PY) -m pytest -q tests/integration

lint: deps
	$(PY) -m ruff check pylvs tests bench

bench: deps
	$(PY) bench/run.py

deps: $(STAMP) apt

# Debian packages: only when something is missing, so repeated runs stay fast and offline-safe.
apt:
	@missing=""; for t in ip nft nginx curl wrk iperf3 tcpdump haproxy; do \
	  command -v $$t >/dev/null 2>&1 || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
