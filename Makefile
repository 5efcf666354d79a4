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
	@echo "The lab runs. Look at it:"
	@echo "  $(BIN)/ikomm lab status              every server and whether it answers"
	@echo "  ldapsearch -H ldaps://127.0.0.4 -x -b dc=gausdal,dc=kommune,dc=no uid=gd10001   (LDAPTLS_CACERT=.lab/tls/lab-ca.pem)"
	@echo "  ls .lab/sshd/fs-lillehammer/root/srv/home | head"
	@echo "  $(BIN)/ikomm lab down                stop it again"

bench: setup
	$(BIN)/python -m bench.lab_start

clean:
	-$(BIN)/ikomm lab down
	rm -rf .lab .venv
