"""One-off equivalence check: the old dict renderer (plano_extproc/envoy_config.py at 0781373, read from
git) vs plano_extproc.bootstrap, over every config in the repository x ext_proc addresses x options.

    PYTHONPATH=$PWD .venv/bin/python tools/compare_bootstrap.py
"""
import copy, importlib.util, itertools, subprocess, sys, tempfile
from pathlib import Path
from google.protobuf import json_format
ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
from plano_extproc.bootstrap import build_bootstrap, render_bootstrap
from envoy.config.bootstrap.v3 import bootstrap_pb2
from plano_extproc.config import load_config, parse_config

OLD = Path(tempfile.mkdtemp()) / "envoy_config_old.py"
OLD.write_text(subprocess.run(["git", "show", "0781373:plano_extproc/envoy_config.py"], capture_output=True, text=True, check=True).stdout)
spec = importlib.util.spec_from_file_location("envoy_config_old", OLD)
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)

OLLAMA = open(ROOT / "tests/test_envoy_config.py").read().split('OLLAMA_CONFIG = """')[1].split('"""')[0]
DEMO = (ROOT / "plano_extproc/demo/config.yaml").read_text()
configs = {
    "demo": DEMO,
    "legacy": (ROOT / "examples/config-legacy-per-provider.yaml").read_text(),
    "examples": (ROOT / "examples/config.yaml").read_text(),
    "triton-cpu": (ROOT / "triton_models/plano-config-cpu.yaml").read_text(),
    "triton-gpu": (ROOT / "triton_models/plano-config-gpu.yaml").read_text(),
    "ollama": OLLAMA,
    "tracing": DEMO + "\ntracing:\n  otlp_endpoint: http://127.0.0.1:4318\n  envoy_otlp_grpc: 127.0.0.1:4317\n",
    "tracing-dns": DEMO + "\ntracing:\n  otlp_endpoint: http://c:4318\n  envoy_otlp_grpc: collector:4317\n  sampling_ratio: 0.25\n",
    "bench-noroutes": (ROOT / "bench/configs/proxy-noroutes.yaml").read_text(),
    "bench-routes": (ROOT / "bench/configs/proxy-routes.yaml").read_text(),
}
for mode in ("off", "headers", "bodies"):
    configs[f"demo-{mode}"] = DEMO + f"\nobservability:\n  responses: {mode}\n"
addresses = ["127.0.0.1:50051", "unix:/tmp/x.sock", "unix:///run/p.sock", "extproc.default.svc:50051", "[::1]:50051"]
options = [{}, {"admin_port": 19901}, {"listener_port": 18080}, {"probe_port": 9902, "admin_port": 9911}]

def drop_generic_route(d):
    """The one intended difference: the old generic cluster_header route is unreachable and gone."""
    d = copy.deepcopy(d)
    for l in d["static_resources"]["listeners"]:
        hcm = l["filter_chains"][0]["filters"][0]["typed_config"]
        if "route_config" not in hcm: continue
        for vh in hcm["route_config"]["virtual_hosts"]:
            before = len(vh["routes"])
            vh["routes"] = [r for r in vh["routes"] if r.get("name") != "proxy"]
            if hcm["stat_prefix"] == "plano":
                assert before - len(vh["routes"]) == 1, "generic route not found"
    return d

n = 0
for (name, text), address, opts in itertools.product(configs.items(), addresses, options):
    config = parse_config(text, {}, resolve_secrets=False)
    old_dict = drop_generic_route(old.render_bootstrap(config, extproc_address=address, **opts))
    old_msg = json_format.ParseDict(old_dict, bootstrap_pb2.Bootstrap())
    new_msg = build_bootstrap(config, extproc_address=address, **opts)
    # the messages themselves, and their JSON forms (which unpack every Any, so map order inside a packed
    # message cannot hide a difference)
    a = json_format.MessageToDict(old_msg, preserving_proto_field_name=True)
    b = render_bootstrap(config, extproc_address=address, **opts)
    assert a == b, (name, address, opts)
    # canonical JSON of both messages (every Any unpacked, keys sorted): message == would compare the
    # packed bytes of an Any, whose map order (typed_per_filter_config) changes from process to process
    canon = lambda m: json_format.MessageToJson(m, preserving_proto_field_name=True, sort_keys=True)
    assert canon(old_msg) == canon(new_msg), (name, address, opts, "messages differ")
    n += 1
print(f"{n} bootstraps: old (minus the generic cluster_header route) == new, as canonical messages and as rendered dicts")
