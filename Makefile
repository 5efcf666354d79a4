# ikomm-migrate: `make demo` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := slapd ldap-utils samba samba-ad-dc winbind openssh-server python3-venv chromium postgresql redis-server nginx acl
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup apt venv test lint unit integration demo bench bench-campaign bench-cockpit bench-tenant bench-scale bench-prefect-floor bench-stream lab-up lab-down clean

setup: apt venv

# System packages: the real servers of the lab (slapd, Samba AD DC, sshd), Chromium for the UI test,
# PostgreSQL and Redis for production mode (ikomm server start --production), and nginx, the proxy that gives
# the Prefect UI its sign-in and roles (ikomm access); acl (getfacl) for the file servers' ACL reader (audit isolation).
# None of their system services is used: ikomm starts its own.
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
	$(BIN)/pytest tests --durations=25

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
	$(BIN)/ikomm lab up
	$(BIN)/ikomm server start
	$(BIN)/ikomm access add helpdesk --role helpdesk >/dev/null   # sign-ins for the UI: .ikomm/access/*.password
	$(BIN)/ikomm access add lead --role lead >/dev/null
	$(BIN)/ikomm serve --stop >/dev/null   # a served process of an earlier demo
	rm -rf .ikomm/ledger.db* .ikomm/credentials/pilot.csv   # the lab starts afresh, so does the demo's ledger
	$(BIN)/ikomm wave run waves/pilot.yaml --auto-approve --outside-window   # the pilot's night is past: the demo replays it
	$(BIN)/ikomm wave status pilot
	$(BIN)/ikomm serve --detach   # start a wave or a rollback from the UI: Deployments
	$(BIN)/python -m lab.browser pilot --out .ikomm/screenshots   # what the helpdesk sees, in headless Chromium
	@echo
	@echo "The pilot wave ran against the lab's real servers on 127.0.0.x. Where to look:"
	@echo "  Prefect UI:  http://127.0.0.1:4200/runs  (flow run 'pilot'; task runs 'gausdal/gd10074 · froydis.sveen3 · migrate · Frøydis Sveen / Froydis Sveen')"
	@echo "               sign in with the line in .ikomm/access/helpdesk.password (reads only) or lead.password (may start and approve)"
	@echo "               artifacts: wave-pilot-progress, wave-pilot-users, wave-pilot-summary; each user's card on their task run"
	@echo "               deployments: start-wave/wave and start-rollback/rollback (ikomm serve; stop: ikomm serve --stop)"
	@echo "  screenshots: .ikomm/screenshots/ (what docs/helpdesk.md shows)"
	@echo "  helpdesk:    $(BIN)/ikomm status gausdal/gd10074      (or an account name, or a person's name; with the UI link)"
	@echo "  the legacy account, now disabled (shadowExpire: 1):"
	@echo "     LDAPTLS_CACERT=.lab/tls/lab-ca.pem ldapsearch -LLL -x -H ldaps://127.0.0.4 -b dc=gausdal,dc=kommune,dc=no uid=gd10074 shadowExpire"
	@echo "  the files:   ls -la .lab/sshd/fs-office/root/data/home/ .lab/sshd/fs-health/root/data/home/ | head"
	@echo "  the device:  cat .lab/sshd/config-host/root/srv/thinclient/tc-lill-01602.conf"
	@echo "  passwords:   .ikomm/credentials/pilot.csv (mode 0600, root only; nowhere else)"
	@echo "  docs/waves.md explains the stages, docs/helpdesk.md the UI; '$(BIN)/ikomm serve --stop; $(BIN)/ikomm lab down; $(BIN)/ikomm server stop' stops everything."

bench: setup
	$(BIN)/python -m bench.lab_start
	$(BIN)/python -m bench.connectors
	$(BIN)/python -m bench.wave
	$(BIN)/python -m bench.prefect_floor
	$(BIN)/python -m bench.cockpit
	$(BIN)/python -m bench.campaign
	$(BIN)/python -m bench.tenant

# Waves on two workers in production mode at 2,500 and 10,000 users (BENCH_SCALE_SIZES): about 1.5 h
bench-scale: setup
	$(BIN)/python -m bench.scale

bench-tenant: setup
	$(BIN)/python -m bench.tenant

bench-campaign: setup
	$(BIN)/python -m bench.campaign

bench-cockpit: setup
	$(BIN)/python -m bench.cockpit

# one large file's copy and hash over SFTP against OpenSSH's scp -3 on the same servers: about 1 min
bench-stream: setup
	$(BIN)/python -m bench.stream

# Prefect alone in the wave's shape (no migration work), 100, 300 and 500 users: about 10 min
bench-prefect-floor: setup
	$(BIN)/python -m bench.prefect_floor

clean:
	-$(BIN)/ikomm serve --stop
	-$(BIN)/ikomm lab down
	-$(BIN)/ikomm server stop
	rm -rf .lab .venv .ikomm
