# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

# The demo needs piflow alone; the tests also need the dev tools and the Spark/Databricks extras.
$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

# The Kerberos tests run a real KDC (MIT krb5 from Debian's packages), and the kerberos extra compiles
# python-gssapi and krb5 against its headers: install them when they are missing (as root, or with sudo).
KRB5_PACKAGES := krb5-kdc krb5-admin-server krb5-user libkrb5-dev gcc python3-dev
$(VENV)/.installed-system: $(VENV)/.installed-base
	@if ! PATH="$$PATH:/usr/sbin:/sbin" command -v krb5kdc >/dev/null || ! command -v krb5-config >/dev/null; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "make test needs MIT Kerberos: a KDC (krb5kdc, kdb5_util, kadmin.local, kinit) and its development"; \
	    echo "files (krb5-config). Not Debian/Ubuntu? e.g. Fedora: dnf install krb5-server krb5-workstation"; \
	    echo "krb5-devel gcc python3-devel; macOS: brew install krb5 (and put its bin/ and sbin/ on PATH)."; \
	    exit 1; \
	  fi; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(KRB5_PACKAGES) \
	  || { $$sudo apt-get update -q && \
	       $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(KRB5_PACKAGES); }; \
	fi
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-base $(VENV)/.installed-system
	$(BIN)/python -m pip install -q -e '.[dev,spark,databricks,kerberos]'
	@touch $@

demo: $(VENV)/.installed-base
	$(BIN)/piflow demo --target ./lake

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/emulator.py
	$(BIN)/python benchmarks/connector.py
	$(BIN)/python benchmarks/af.py
	$(BIN)/python benchmarks/stream.py
	$(BIN)/python benchmarks/spark.py

clean:
	rm -rf $(VENV) lake .bench
