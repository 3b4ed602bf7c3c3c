"""The tiny base LVLM, trained once: a content-keyed cache, and the copy shipped with the package.

The base model is not part of SRC — real recipes start from published weights (``model.base`` is a hub id
or path) — yet the tiny recipe has no published weights to start from and trains its own from scratch
(:func:`srcal.rft.base.train_tiny_base`), the slowest step of a CPU run after the judge. So the ``base``
stage first looks for a finished tiny base trained from exactly the same inputs:

1. the copy shipped as package data (``srcal/models/tiny_base/``): the output of ``srcal stage base`` on
   the tiny recipe's own data, with the key it was trained under (``base_key.json``). It plays the part of
   the published checkpoint a real recipe starts from; :data:`RECIPE_COMMAND` reproduces it bit for bit
   on the same library versions;
2. the user cache ``<cache_root>/tiny-base/<key>/``, filled by every base trained with caching on.

The key is a hash of everything that decides the trained weights: the recipe's ``seed``, ``model`` and
``base_train`` sections (less the ``cache`` switch), the shapes-world settings (the tokenizer's corpus)
and the content of ``base_train.jsonl`` (its scenes decide the images). Library versions are not in the
key: a base trained under another torch is still a valid starting point, as a published checkpoint is.
``base_train.cache: false`` always trains.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

PACKAGE_DIR = "tiny_base"
"""Package-data folder (inside ``srcal.models``) of the shipped tiny base."""

KEY_FILE = "base_key.json"
SUMMARY_FILE = "base_summary.json"

RECIPE_COMMAND = (
    "srcal data build --recipe tiny --out /tmp/tiny-data && "
    "srcal stage base --recipe tiny --set base_train.cache=false --input data=/tmp/tiny-data "
    "--output /tmp/tiny-base && python -m srcal.models.base_cache ship /tmp/tiny-base"
)
"""How the shipped base is (re)made; the last command copies it into the package with its key."""

_NOT_COPIED = ("summary.json", "_SRCAL_COMPLETE.json", "rejected.jsonl", KEY_FILE, SUMMARY_FILE)
"""Artifact files that are not part of the model (stage bookkeeping)."""


def base_key(recipe, data_dir: Path) -> str:
    """Hash of what decides the tiny base's weights (module docstring)."""
    d = recipe.to_dict()
    base_train = {k: v for k, v in d["base_train"].items() if k != "cache"}
    blob = json.dumps({"seed": d["seed"], "model": d["model"], "base_train": base_train,
                       "shapes": d["data"]["shapes"]}, sort_keys=True, default=str).encode()
    h = hashlib.sha256(blob)
    h.update(hashlib.sha256((Path(data_dir) / "base_train.jsonl").read_bytes()).digest())
    return h.hexdigest()[:20]


def shipped_dir() -> Path | None:
    """The package-data copy, if this install has one."""
    p = Path(str(resources.files("srcal.models") / PACKAGE_DIR))
    return p if (p / KEY_FILE).exists() else None


def cache_dir(key: str) -> Path:
    from srcal.run import store

    return store.cache_root() / "tiny-base" / key


def find(key: str) -> tuple[Path, str] | None:
    """(directory, "package" | "cache") of a finished base with this key, else None."""
    shipped = shipped_dir()
    if shipped is not None and json.loads((shipped / KEY_FILE).read_text()).get("key") == key:
        return shipped, "package"
    cached = cache_dir(key)
    if (cached / KEY_FILE).exists():
        return cached, "cache"
    return None


def restore(key: str, out: Path) -> dict[str, Any] | None:
    """Copy a finished base with ``key`` into ``out``; returns its training summary (+ ``from_cache``)."""
    hit = find(key)
    if hit is None:
        return None
    src, where = hit
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in _NOT_COPIED:
            shutil.copy2(f, out / f.name)
    summary = json.loads((src / SUMMARY_FILE).read_text()) if (src / SUMMARY_FILE).exists() else {}
    return {**summary, "from_cache": where, "base_key": key}


def save(key: str, trained: Path, summary: dict[str, Any], dest: Path | None = None) -> Path:
    """Copy a freshly trained base into the user cache (or ``dest``) under ``key``, atomically."""
    dest = dest or cache_dir(key)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in trained.iterdir():
        if f.is_file() and f.name not in _NOT_COPIED:
            shutil.copy2(f, tmp / f.name)
    clean = {k: v for k, v in summary.items()
             if k not in ("from_cache", "base_key", "resume_key", "inputs", "stage", "skipped")}
    (tmp / SUMMARY_FILE).write_text(json.dumps(clean, indent=2, default=str))
    (tmp / KEY_FILE).write_text(json.dumps({"key": key}))  # last: a directory with a key file is complete
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def ship(base_artifact: Path) -> Path:
    """Copy a finished ``srcal stage base`` output into the package (the shipped base): its key and
    summary come from the artifact's ``summary.json``."""
    summary = json.loads((base_artifact / "summary.json").read_text())
    key = summary.get("base_key")
    if not key:
        raise ValueError(f"{base_artifact}/summary.json has no base_key (was it trained by the tiny recipe?)")
    dest = Path(str(resources.files("srcal.models"))) / PACKAGE_DIR
    return save(key, base_artifact, summary, dest)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "ship":
        raise SystemExit("usage: python -m srcal.models.base_cache ship <base artifact dir>")
    print(ship(Path(sys.argv[2])))
