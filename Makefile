# ikomm-migrate: `make demo` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := slapd ldap-utils samba samba-ad-dc winbind openssh-server python3-venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup apt venv test lint unit integration demo bench lab-up lab-down clean

setup: apt venv

# System packages: the real servers of the lab (slapd, Samba AD DC, sshd).
apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing system packages: $(APT_PACKAGES)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	fi

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

lint: venv
	$(BIN)/ruff check ikomm lab flows tasks tests bench
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest tests

unit: venv
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

lab-up: setup
	$(BIN)/ikomm lab up

lab-down: venv
	$(BIN)/ikomm lab down

demo: setup
	$(BIN)/ikomm inventory validate
	$(BIN)/ikomm inventory show
	$(BIN)/ikomm lab up
	@echo
	@echo "The lab runs: twelve real servers on 127.0.0.x, seeded with the 2,500 users of inventory/. Look at it:"
	@echo "  $(BIN)/ikomm lab status"
	@echo "  LDAPTLS_CACERT=.lab/tls/lab-ca.pem ldapsearch -LLL -x -H ldaps://127.0.0.4 -b dc=gausdal,dc=kommune,dc=no uid=gd10001"
	@echo "  ls .lab/sshd/fs-lillehammer/root/srv/home | head        (the legacy file server's tree, as sshd serves it)"
	@echo "  cat .lab/sshd/config-host/root/srv/thinclient/tc-lill-00001.conf"
	@echo "  docs/lab.md explains each server; '$(BIN)/ikomm lab down' stops them all."
	@echo "The wave itself (Prefect UI, ledger, approval) arrives with issue 4."

bench: setup
	$(BIN)/python -m bench.lab_start
	$(BIN)/python -m bench.connectors

clean:
	-$(BIN)/ikomm lab down
	rm -rf .lab .venv
