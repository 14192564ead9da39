# The two quick-start commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
DEMO_STAMP := $(VENV)/.installed

# Servers the integration tests start themselves on loopback ports, and the browser
# the browser tests drive.
SYSTEM_PACKAGES := redis-server redis-sentinel nginx chromium npm curl wget rclone
# axe-core, which the browser tests run in each page, from npm into node_modules/ (ignored
# by git; --no-save writes no package.json or lock file).
AXE := node_modules/axe-core/axe.min.js
comma := ,

.PHONY: demo test bench screenshots install system-packages clean lint axe

# The demo needs only the service's own dependencies; the tests add their extras
# (the proxies, Playwright, hypothesis...) on top.
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The gatekeeper with the ORCID emulator and sample datasets; DEMO_PORT and
# DEMO_ORCID_PORT move it from 8000 and 8001. Ctrl-C stops everything.
demo: $(DEMO_STAMP)
	$(BIN)/gatekeeper demo --policy policies/

# Installs what is missing, with one `apt-get update` first (we run as root in CI).
system-packages:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  case $$pkg in \
	    redis-server) command -v redis-server >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    redis-sentinel) command -v redis-sentinel >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    nginx) { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    chromium) test -x /usr/bin/chromium || missing="$$missing $$pkg";; \
	    npm) command -v npm >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    wrk) command -v wrk >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    *) dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	  esac; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(AXE):
	npm install --no-save --no-audit --no-fund --prefix . axe-core
	test -f $(AXE)

axe: system-packages
	@$(MAKE) --no-print-directory $(AXE)

test: $(STAMP) system-packages axe
	$(BIN)/python -m pytest

# Refreshes docs/screenshots/ from the browser test (make test leaves them alone).
screenshots: $(STAMP) system-packages axe
	SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser -q

# Run by hand, never in CI (bench/README.md says what each scenario measures). Every
# scenario, about 15 minutes, or one: `make bench SCENARIO=nginx-cache`; QUICK=1 for
# smoke runs (about a minute each). Tables go to bench/results/<scenario>.md and .json.
# The servers scenario (all scenarios, with no SCENARIO) also installs the servers it
# compares with gunicorn: uWSGI compiles, about half a minute.
bench: $(STAMP)
	@$(MAKE) --no-print-directory system-packages SYSTEM_PACKAGES="redis-server wrk nginx"
	$(if $(or $(filter servers,$(subst $(comma), ,$(SCENARIO))),$(if $(SCENARIO),,all)),$(BIN)/pip install --quiet -e '.[servers]')
	$(BIN)/python bench/run.py $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(QUICK),--quick)

# What each commit is checked with before it lands: ruff's lint rules and its formatting.
lint: $(STAMP)
	$(BIN)/pip install --quiet -e '.[lint]'
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis node_modules
