# The two quick-start commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Servers the integration tests start themselves, on loopback ports.
SYSTEM_PACKAGES := redis-server nginx

.PHONY: demo test install system-packages clean lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Until the service exists, the demo explains a shipped example record.
demo: $(STAMP)
	$(BIN)/gatekeeper policy check policies/
	-$(BIN)/gatekeeper explain --orcid 0000-0002-1825-0097 --dataset sail-cohort \
	    --record app/examples/record-0000-0002-1825-0097.json --policy policies/

# Installs what is missing, with one `apt-get update` first (we run as root in CI).
system-packages:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  case $$pkg in \
	    redis-server) command -v redis-server >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    nginx) { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    *) dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	  esac; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: $(STAMP) system-packages
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
