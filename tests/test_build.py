"""Stage `data` end to end: shapes and real worlds, local and S3 outputs, determinism, failure safety."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from srcal import stages
from srcal.run import store
from srcal.config import load_recipe, recipe_from_dict
from srcal.data.mix import ratio_deviation
from srcal.data.schema import DataError, read_jsonl

SMALL = ["data.rft_size=80", "data.calib_size=40", "data.eval_size=40", "data.base_train_size=40"]


def _files(d: Path) -> dict[str, bytes]:
    """Every data file's bytes (the marker and summary.json carry timestamps/timings by design)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in (store.MARKER, "summary.json")}


def _splits(d: Path) -> dict[str, list[dict]]:
    return {s: read_jsonl(d / f"{s}.jsonl", images_root=d, max_rejected_share=0.0)[0]
            for s in ("rft", "calib", "eval")}


def _assert_splits_ok(d: Path, sizes: dict[str, int]):
    splits = _splits(d)
    ids = {s: {r["id"] for r in rows} for s, rows in splits.items()}
    assert not (ids["rft"] & ids["calib"]) and not (ids["rft"] & ids["eval"]) and not (ids["calib"] & ids["eval"])
    for s, rows in splits.items():
        assert len(rows) == sizes[s]
        counts = {c: sum(r["category"] == c for r in rows) for c in ("perception", "chart", "math")}
        assert ratio_deviation(counts, [2, 1, 1]) <= 0.03, (s, counts)
    return splits


def test_shapes_build_local_is_disjoint_on_ratio_and_byte_identical(tmp_path):
    recipe = load_recipe("tiny", SMALL)
    s1 = stages.execute("data", recipe, {}, str(tmp_path / "a"))
    _assert_splits_ok(tmp_path / "a", {"rft": 80, "calib": 40, "eval": 40})
    base = read_jsonl(tmp_path / "a" / "base_train.jsonl", images_root=tmp_path / "a", max_rejected_share=0.0)[0]
    assert len(base) == 40 and all(r["source"] == "shapes" and r["scene"] for r in base)
    assert s1["counts"]["rft"]["by_category"] == {"perception": 40, "chart": 20, "math": 20}
    assert s1["rejected"]["total"] == 0 and (tmp_path / "a" / "rejected.jsonl").read_text() == ""
    # No eval sample repeats a training sample's content (question + scene), not only its id.
    train = [json.dumps([r["question"], r["scene"]], sort_keys=True) for s in ("rft", "calib", "base_train")
             for r in read_jsonl(tmp_path / "a" / f"{s}.jsonl", max_rejected_share=0.0)[0]]
    ev = [json.dumps([r["question"], r["scene"]], sort_keys=True) for r in _splits(tmp_path / "a")["eval"]]
    assert not set(train) & set(ev)
    # Same seed: byte-identical files; another seed: different data.
    stages.execute("data", recipe, {}, str(tmp_path / "b"))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    stages.execute("data", load_recipe("tiny", [*SMALL, "seed=1"]), {}, str(tmp_path / "c"))
    assert _files(tmp_path / "c")["rft.jsonl"] != _files(tmp_path / "a")["rft.jsonl"]
    # Re-running with the same recipe is a no-op (resume).
    assert stages.execute("data", recipe, {}, str(tmp_path / "a")).get("skipped") is True


def test_shapes_build_to_s3_matches_local(tmp_path, s3_bucket):
    recipe = load_recipe("tiny", SMALL)
    uri = f"{s3_bucket}/build/data"
    stages.execute("data", recipe, {}, str(tmp_path / "local"))
    summary = stages.execute("data", recipe, {}, uri)
    assert store.is_complete(uri) and summary["counts"]["eval"]["n"] == 40
    local = store.materialize(uri)
    assert _files(local) == _files(tmp_path / "local")
    _assert_splits_ok(local, {"rft": 80, "calib": 40, "eval": 40})


def test_cli_data_build_to_s3(tmp_path, s3_bucket):
    """The command users run; the subprocess inherits the moto AWS_* environment of the fixture."""
    uri = f"{s3_bucket}/cli/data"
    sets = [a for s in SMALL for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "srcal.cli", "data", "build", "--recipe", "tiny", "--out", uri, *sets],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == uri
    assert store.is_complete(uri)
    _assert_splits_ok(store.materialize(uri), {"rft": 80, "calib": 40, "eval": 40})


def _real_recipe(tmp_path, vqa_parquet, extra=None, **data):
    src = tmp_path / "releases"
    vqa_parquet("aokvqa", src / "aokvqa.parquet", n=40)
    vqa_parquet("chartqa", src / "chartqa.parquet", n=20)
    vqa_parquet("scienceqa", src / "scienceqa.parquet", n=12)
    vqa_parquet("ai2d", src / "ai2d.parquet", n=12)
    vqa_parquet("mmstar", src / "mmstar.parquet", n=12)
    sources = [
        {"adapter": "aokvqa", "path": str(src / "aokvqa.parquet"), "category": "perception"},
        {"adapter": "chartqa", "path": str(src / "chartqa.parquet"), "category": "chart"},
        {"adapter": "scienceqa", "path": str(src / "scienceqa.parquet"), "category": "math"},
        {"adapter": "ai2d", "path": str(src / "ai2d.parquet"), "category": "math"},
        {"adapter": "mmstar", "path": str(src / "mmstar.parquet"), "category": "perception", "split": "eval"},
        *(extra or []),
    ]
    raw = {"name": "real-test", "model": {"base": "some/hf-model"},
           "data": {"world": "real", "rft_size": 32, "calib_size": 16, "eval_size": 8, "base_train_size": 0,
                    "max_rejected_share": 0.2, "sources": sources, **data}}
    return recipe_from_dict(raw)


def test_real_build_mixes_sources_and_quarantines_bad_rows(tmp_path, vqa_parquet):
    recipe = _real_recipe(tmp_path, vqa_parquet)
    summary = stages.execute("data", recipe, {}, str(tmp_path / "out"))
    out = tmp_path / "out"
    splits = _assert_splits_ok(out, {"rft": 32, "calib": 16, "eval": 8})
    assert {r["source"] for r in splits["eval"] if r["category"] == "perception"} == {"mmstar"}
    assert not any(r["source"] == "mmstar" for r in splits["rft"] + splits["calib"])
    assert set(summary["counts"]["rft"]["by_source"]) == {"aokvqa", "chartqa", "scienceqa", "ai2d"}
    # 2 bad rows per source file, quarantined with file, row, field and reason.
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 10 == summary["rejected"]["total"]
    assert {Path(r["file"]).name for r in rejected} == {f"{a}.parquet" for a in
                                                       ("aokvqa", "chartqa", "scienceqa", "ai2d", "mmstar")}
    assert all(r["field"] and r["reason"] for r in rejected)
    # Only images of drawn rows are kept.
    assert len(list((out / "images").glob("*.png"))) == 56
    assert not (out / "base_train.jsonl").exists()
    stages.execute("data", recipe, {}, str(tmp_path / "again"))
    assert _files(out) == _files(tmp_path / "again")


def test_failing_build_keeps_the_published_artifact(tmp_path, vqa_parquet):
    recipe = _real_recipe(tmp_path, vqa_parquet)
    uri = str(tmp_path / "out")
    stages.execute("data", recipe, {}, uri)
    before = _files(Path(uri))
    marker = store.read_marker(uri)
    vqa_parquet("ai2d", tmp_path / "junk" / "ai2d.parquet", n=1)  # 1 good, 2 bad: 67% rejected
    bad = _real_recipe(tmp_path, vqa_parquet, extra=[
        {"adapter": "ai2d", "name": "junk", "path": str(tmp_path / "junk"), "category": "math"}])
    with pytest.raises(DataError, match=r"junk.*2 of 3 rows rejected"):
        stages.execute("data", bad, {}, uri, force=True)
    assert store.read_marker(uri) == marker and _files(Path(uri)) == before
    # A retry after fixing the input does not publish leftovers of the failed attempt.
    fixed = _real_recipe(tmp_path, vqa_parquet, max_rejected_share=0.7, extra=[
        {"adapter": "ai2d", "name": "junk", "path": str(tmp_path / "junk"), "category": "math"}])
    summary = stages.execute("data", fixed, {}, uri, force=True)
    assert summary["rejected"]["total"] == 12
    used = {r["image"] for rows in _splits(Path(uri)).values() for r in rows}
    assert {f"images/{p.name}" for p in (Path(uri) / "images").iterdir()} == used


def test_duplicate_source_labels_are_refused(tmp_path, vqa_parquet):
    recipe = _real_recipe(tmp_path, vqa_parquet, extra=[
        {"adapter": "chartqa", "path": str(tmp_path / "releases" / "chartqa.parquet"), "category": "chart"}])
    with pytest.raises(ValueError, match="distinct `name`"):
        stages.execute("data", recipe, {}, str(tmp_path / "out"))
