# pylvs: the two commands a newcomer needs (run as root; they install what they need):
#   make demo   - sets up and runs the NAT demo on an embedded namespace lab
#   make test   - sets up and runs the unit and integration tests
#   make bpf    - compiles the kernel fast path (build/bpf/pylvs_fastpath.bpf.o; make test needs it)
#   make man    - regenerates the man pages and bash completions in share/ from the parsers
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 nftables nginx-light curl wrk iperf3 tcpdump haproxy procps keepalived bird2
# The metrics and status page tests: a real Prometheus server scrapes lvsd, headless Chromium loads the page.
APT_PACKAGES += prometheus chromium chromium-driver
# The fast path: clang -target bpf, libbpf's headers and shared library, the kernel's uapi headers.
BPF_APT_PACKAGES := clang llvm libbpf-dev libbpf1 linux-libc-dev
STAMP := $(VENV)/.installed
BPF_DIR := pylvs/datapath/bpf
BPF_OBJ := build/bpf/pylvs_fastpath.bpf.o
BPF_HINT := install clang, llvm and libbpf-dev (Debian: apt-get install $(BPF_APT_PACKAGES), or run make as root)

.PHONY: demo test deps unit integration lint bench clean apt bpf man

demo: deps
	$(PY) -m pylvs.lab.demo

# The whole suite runs with lvsd's default data path (auto: the BPF fast path where it loads); the
# forwarding suites run a second time through the Python data path alone.
PYTHON_PATH_SUITES := tests/integration/test_nat.py tests/integration/test_dr.py tests/integration/test_fullnat.py \
	tests/integration/test_fwmark.py tests/integration/test_sync.py

test: deps bpf
	$(PY) -m ruff check pylvs tests bench
	$(PY) -m pytest -q tests
	PYLVS_DATAPATH=python $(PY) -m pytest -q $(PYTHON_PATH_SUITES)

unit: deps
	$(PY) -m pytest -q tests/unit

integration: deps bpf
	$(PY) -m pytest -q tests/integration

lint: deps
	$(PY) -m ruff check pylvs tests bench

bench: deps
	$(PY) bench/run.py

# Man pages and bash completions (share/), generated from the parsers; tests/unit/test_doc.py fails
# when the committed files differ from what the parsers give.
man: deps
	$(PY) -m pylvs.doc.generate

deps: $(STAMP) apt

# Debian packages: only when something is missing, so repeated runs stay fast and offline-safe.
apt:
	@missing=""; for t in ip nft nginx curl wrk iperf3 tcpdump haproxy keepalived prometheus chromium chromedriver bird; do \
	  command -v $$t >/dev/null 2>&1 || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	for f in /usr/include/bpf/bpf_helpers.h /usr/include/linux/bpf.h; do [ -f $$f ] || missing="$$missing $$f"; done; \
	command -v clang >/dev/null 2>&1 || missing="$$missing clang"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) \
	    $(BPF_APT_PACKAGES) >/dev/null; \
	fi

# The BPF object: clang's bpf target does not search Debian's multiarch include directory (asm/).
bpf: $(BPF_OBJ)

$(BPF_OBJ): $(BPF_DIR)/pylvs_fastpath.bpf.c $(BPF_DIR)/pylvs_flow.h $(BPF_DIR)/pylvs_sched.bpf.h $(BPF_DIR)/pylvs_fastpath6.h | apt
	@command -v clang >/dev/null 2>&1 || { echo "clang is missing: $(BPF_HINT)"; exit 1; }
	@[ -f /usr/include/bpf/bpf_helpers.h ] || { echo "libbpf headers are missing: $(BPF_HINT)"; exit 1; }
	@mkdir -p $(@D)
	clang -O2 -g -Wall -Werror -target bpf -I/usr/include/$$(clang -print-multiarch) -c $< -o $@

$(STAMP): pyproject.toml setup.py pylvs/sched/_maglev.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache pylvs/sched/*.so
