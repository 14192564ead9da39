# The two quick-start commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean lint

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

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
