"""Regenerate the example bootstrap(s) in this directory from the demo config.

    .venv/bin/python envoy/render_examples.py          # write envoy/demo-bootstrap.yaml
    .venv/bin/python envoy/render_examples.py --check  # exit 1 if the file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from plano_extproc.bootstrap import render_bootstrap_yaml  # noqa: E402
from plano_extproc.config import load_config  # noqa: E402

DEMO_CONFIG = ROOT / "plano_extproc" / "demo" / "config.yaml"
EXTPROC_ADDRESS = "127.0.0.1:50051"


def render_examples() -> dict[Path, str]:
    config = load_config(DEMO_CONFIG, env={}, resolve_secrets=False)
    header = (
        "# Rendered from plano_extproc/demo/config.yaml by envoy/render_examples.py "
        f"(ext_proc at {EXTPROC_ADDRESS}).\n"
    )
    return {HERE / "demo-bootstrap.yaml": header + render_bootstrap_yaml(config, extproc_address=EXTPROC_ADDRESS)}


def main(argv: list[str]) -> int:
    stale = []
    for path, text in render_examples().items():
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    for path in stale:
        print(f"stale: {path.relative_to(ROOT)} (run envoy/render_examples.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
