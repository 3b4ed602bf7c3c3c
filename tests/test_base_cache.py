"""The tiny base is trained once: the base stage restores a base trained from the same inputs."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

TINY = [
    "model.tiny.vision_hidden=32", "model.tiny.text_hidden=64", "model.tiny.text_layers=1",
    "model.tiny.vocab_size=400", "model.tiny.corpus_samples=150",
    "data.rft_size=4", "data.calib_size=2", "data.eval_size=2", "data.base_train_size=8",
    "base_train.steps=2", "base_train.batch_size=4",
]


def _recipe(*extra: str):
    from srcal.config import load_recipe

    return load_recipe("tiny", [*TINY, *extra])


@pytest.fixture()
def data_dir(tmp_path):
    from srcal.data.build import run_data_build

    run_data_build(_recipe(), {}, tmp_path / "data")
    return tmp_path / "data"


def test_base_is_trained_once_then_restored(data_dir, tmp_path, monkeypatch):
    """First call trains and fills the cache; the second restores byte-identical weights without training;
    a changed base_train value (lr) is a new key and trains again; cache=false never reads the cache."""
    from srcal.rft import base
    from srcal.models import base_cache

    monkeypatch.setenv("SRCAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(base_cache, "shipped_dir", lambda: None)  # the shipped base is for the real recipe
    trained = []
    real_train = base.train_tiny_base
    monkeypatch.setattr(base, "train_tiny_base", lambda *a: trained.append(1) or real_train(*a))

    first = base.run_base(_recipe(), {"data": data_dir}, tmp_path / "b1")
    second = base.run_base(_recipe(), {"data": data_dir}, tmp_path / "b2")
    assert len(trained) == 1 and "from_cache" not in first and second["from_cache"] == "cache"
    assert second["base_key"] == first["base_key"] and second["counts"] == first["counts"]
    for f in ("model.safetensors", "config.json", "tokenizer.json", "train_log.jsonl"):
        assert (tmp_path / "b2" / f).read_bytes() == (tmp_path / "b1" / f).read_bytes(), f

    other = base.run_base(_recipe("base_train.lr=1e-3"), {"data": data_dir}, tmp_path / "b3")
    assert len(trained) == 2 and other["base_key"] != first["base_key"]
    base.run_base(_recipe("base_train.cache=false"), {"data": data_dir}, tmp_path / "b4")
    assert len(trained) == 3
    # the cache switch is not part of the key: the same weights either way
    assert base_cache.base_key(_recipe("base_train.cache=false"), data_dir) == first["base_key"]


def test_shipped_base_matches_its_key_and_ship_copies_an_artifact(data_dir, tmp_path, monkeypatch):
    """A shipped folder is used only when its key matches; ``ship`` takes the key from summary.json."""
    from srcal.rft import base
    from srcal.models import base_cache

    monkeypatch.setenv("SRCAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(base_cache, "shipped_dir", lambda: None)
    art = tmp_path / "art"
    summary = base.run_base(_recipe("base_train.cache=false"), {"data": data_dir}, art)
    (art / "summary.json").write_text(json.dumps({"stage": "base", **summary, "resume_key": "x"}))
    pkg = tmp_path / "pkg"
    saved = base_cache.save(summary["base_key"], art, json.loads((art / "summary.json").read_text()), pkg)
    assert json.loads((saved / base_cache.KEY_FILE).read_text())["key"] == summary["base_key"]
    assert "resume_key" not in json.loads((saved / base_cache.SUMMARY_FILE).read_text())
    monkeypatch.setattr(base_cache, "shipped_dir", lambda: pkg)
    got = base.run_base(_recipe(), {"data": data_dir}, tmp_path / "from-pkg")
    assert got["from_cache"] == "package"
    assert (tmp_path / "from-pkg" / "model.safetensors").read_bytes() == (art / "model.safetensors").read_bytes()
    assert base_cache.find("some-other-key") is None
