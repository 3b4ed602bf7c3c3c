"""srcal.data.adapters on parquet files with the real column names and types (conftest.write_vqa_parquet)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import real_data
from PIL import Image

from srcal.data import adapters
from srcal.data.schema import DataError, validate_sample


def _read(tmp_path, vqa_parquet, kind, adapter=None, category="chart", n=6, **kw):
    f = tmp_path / "src" / f"{kind}.parquet"
    n_bad = vqa_parquet(kind, f, n)
    rows, rejected = adapters.read_source(adapter or kind, str(f), category=category, out_dir=tmp_path / "out",
                                          max_rejected_share=kw.pop("max_rejected_share", 0.5), **kw)
    assert len(rows) == n and len(rejected) == n_bad
    for r in rows:
        assert validate_sample(r, tmp_path / "out") == [], r
        assert r["category"] == category and r["image"] == f"images/{r['id']}.png"
        with Image.open(tmp_path / "out" / r["image"]) as im:
            assert im.format == "PNG" and im.size == (8, 6)
    for r in rejected:
        assert r["file"] == str(f) and isinstance(r["line"], int) and r["field"] and r["reason"]
    json.dumps(rows)  # every row is JSON-serialisable as written
    return rows, {r["line"]: r for r in rejected}


def test_chartqa_train_layout(tmp_path, vqa_parquet):
    rows, rej = _read(tmp_path, vqa_parquet, "chartqa")
    assert rows[3]["question"] == "What is the value of bar 3?" and rows[3]["answer"] == "30"
    assert rows[3]["id"] == "chartqa-chartqa-3" and rows[3]["source"] == "chartqa"
    assert rej[6]["field"] == "image" and "cannot decode" in rej[6]["reason"]
    assert rej[7]["field"] == "label"


def test_chartqa_lmms_test_layout(tmp_path, vqa_parquet):
    rows, rej = _read(tmp_path, vqa_parquet, "chartqa-lmms", adapter="chartqa", source="chartqa_test")
    assert rows[2]["answer"] == "2002" and rows[2]["meta"]["type"] == "human_test"
    assert rows[2]["source"] == "chartqa_test" and rows[2]["id"].startswith("chartqa_test-")
    assert rej[6]["field"] == "image" and "null" in rej[6]["reason"]
    assert rej[7]["field"] == "answer"


def test_aokvqa_answer_index_and_rationales(tmp_path, vqa_parquet):
    rows, rej = _read(tmp_path, vqa_parquet, "aokvqa", category="perception")
    r = rows[1]
    assert r["id"] == "aokvqa-q001" and r["choices"] == ["riding", "eating", "sleeping", "reading"]
    assert r["answer"] == "eating"  # correct_choice_idx 1
    assert r["rationale"] == "Item 1 is a bike. People ride bikes."
    assert rej[6]["field"] == "correct_choice_idx" and rej[6]["id"] is None
    assert rej[7]["field"] == "image" and rej[7]["id"] == "aokvqa-qbad2"


def test_scienceqa_index_hint_and_rationale(tmp_path, vqa_parquet):
    rows, rej = _read(tmp_path, vqa_parquet, "scienceqa", category="math")
    assert rows[0]["answer"] == "north" and rows[0]["meta"]["answer_letter"] == "A"
    assert rows[0]["question"] == "Which magnet attracts 0?"
    assert rows[0]["rationale"] == "Magnets attract opposite poles.", "lecture when the solution is empty"
    assert rows[1]["question"] == "Context: Two magnets.\nWhich magnet attracts 1?"
    assert rows[1]["answer"] == "south" and rows[1]["rationale"] == "Solution 1."
    assert rej[6]["field"] == "image"  # text-only row
    assert rej[7]["field"] == "answer" and "index 5" in rej[7]["reason"]


def test_ai2d_string_index(tmp_path, vqa_parquet):
    rows, rej = _read(tmp_path, vqa_parquet, "ai2d", category="math")
    assert rows[2]["answer"] == "pupa" and rows[2]["choices"][2] == "pupa"  # answer "2"
    assert rej[6]["field"] == "answer" and rej[7]["field"] == "image"


def test_mathvista_free_form_and_multi_choice(tmp_path, vqa_parquet):
    rows, rej = _read(tmp_path, vqa_parquet, "mathvista", category="math")
    mc, ff = rows[0], rows[1]
    assert mc["id"] == "mathvista-1" and mc["choices"] == ["1", "2", "3"] and mc["answer"] == "2"
    assert "choices" not in ff and ff["answer"] == "1" and ff["meta"]["answer_type"] == "integer"
    assert rej[6]["field"] == "answer" and rej[7]["field"] == "image"


def test_mmstar_embedded_options(tmp_path, vqa_parquet):
    rows, rej = _read(tmp_path, vqa_parquet, "mmstar", category="perception")
    assert rows[0]["choices"] == ["a red, round ball", "a cube", "a cone", "nothing"]
    assert rows[0]["answer"] == "a red, round ball" and rows[0]["meta"]["answer_letter"] == "A"
    assert rows[2]["answer"] == "a cone" and rows[2]["id"] == "mmstar-2"
    assert rej[6]["field"] == "answer" and rej[7]["field"] == "image"


def test_parse_embedded_options_requires_ordered_letters():
    assert adapters.parse_embedded_options("Q?\nOptions: A: x, B: y") == ("Q?", ["x", "y"])
    assert adapters.parse_embedded_options("Q? no options") is None
    assert adapters.parse_embedded_options("Q?\nOptions: B: x, A: y") is None


def test_too_many_bad_rows_stop_with_the_file_named(tmp_path, vqa_parquet):
    f = tmp_path / "ai2d.parquet"
    vqa_parquet("ai2d", f, n=2)  # 2 good, 2 bad: 50% rejected
    with pytest.raises(DataError, match=r"ai2d\.parquet: 2 of 4 rows rejected"):
        adapters.read_source("ai2d", str(f), category="math", out_dir=tmp_path / "o", max_rejected_share=0.05)


def test_max_rows_directory_and_unknown_adapter(tmp_path, vqa_parquet):
    vqa_parquet("chartqa", tmp_path / "d" / "train-00000.parquet", n=4, bad=False)
    vqa_parquet("chartqa", tmp_path / "d" / "train-00001.parquet", n=4, bad=False)
    rows, _ = adapters.read_source("chartqa", str(tmp_path / "d"), category="chart", out_dir=tmp_path / "o",
                                   max_rejected_share=0.0)
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8, "ids unique across files"
    rows, _ = adapters.read_source("chartqa", str(tmp_path / "d"), category="chart", out_dir=tmp_path / "o",
                                   max_rejected_share=0.0, max_rows=5)
    assert len(rows) == 5
    with pytest.raises(ValueError, match="unknown adapter 'vqa9'"):
        adapters.read_source("vqa9", str(tmp_path / "d"), category="chart", out_dir=tmp_path, max_rejected_share=0)
    with pytest.raises(FileNotFoundError, match="no parquet files"):
        adapters.read_source("chartqa", str(tmp_path / "nope"), category="chart", out_dir=tmp_path,
                             max_rejected_share=0)


def test_source_on_s3(tmp_path, vqa_parquet, s3_bucket):
    from srcal.run import store

    f = tmp_path / "ai2d.parquet"
    vqa_parquet("ai2d", f, n=3, bad=False)
    bucket, _ = store.split_s3(s3_bucket)
    store.s3_client().upload_file(str(f), bucket, "releases/ai2d/test-00000.parquet")
    rows, rejected = adapters.read_source("ai2d", f"{s3_bucket}/releases/ai2d", category="math",
                                          out_dir=tmp_path / "o", max_rejected_share=0.0)
    assert len(rows) == 3 and not rejected


# ----------------------------------------------------------------------------- real-shaped releases (real_data)


@pytest.mark.parametrize("adapter,category,_split", real_data.RECIPE_SOURCES)
def test_real_shaped_release_becomes_upright_rgb_with_unicode_intact(tmp_path, adapter, category, _split):
    """Every image kind of the real releases (tests/real_data.py) comes out as an upright 8-bit RGB PNG.

    Hand-computed expectations: the red marker (230, 20, 20) in greyscale is L = 0.299·230 + 0.587·20 +
    0.114·20 = 82.8 → 83, and the 16-bit copy (83·257 = 21331) scales back to 21331/257 = 83; a transparent
    background is white (255, 255, 255); the EXIF image, stored 640×480 with Orientation 6, is 480×640 with
    the marker at its top-left. Before :func:`adapters.to_rgb`, the EXIF image stayed sideways, the RGBA and
    palette backgrounds came out black and the 16-bit image white (255).
    """
    n = len(real_data.KINDS)
    real_data.write_release(adapter, tmp_path / "rel", n, shards=3)
    rows, rejected = adapters.read_source(adapter, str(tmp_path / "rel"), category=category,
                                          out_dir=tmp_path / "out", max_rejected_share=0.0)
    assert len(rows) == n and not rejected
    assert len({r["id"] for r in rows}) == n
    for i, (row, kind) in enumerate(zip(rows, real_data.KINDS, strict=True)):
        assert validate_sample(row, tmp_path / "out") == [], row
        assert row["answer"] == real_data.unicode_answer(adapter, i)
        assert any(w in row["question"] for w in real_data.WORDS), row["question"]
        with Image.open(tmp_path / "out" / row["image"]) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", real_data.upright_size(kind)), kind
            x0, y0, x1, y1 = real_data.marker_box(kind)
            inside = im.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))
            if kind in ("rgba", "palette"):
                assert im.getpixel((1, 1)) == (255, 255, 255), kind  # transparent → white, not black
            elif kind in ("grey", "grey16"):
                assert inside == (83, 83, 83), kind
            else:  # JPEG rounding: within a few levels of (230, 20, 20)
                assert max(abs(a - b) for a, b in zip(inside, real_data.RED, strict=True)) <= 12, (kind, inside)
    # Unicode survives the JSONL round trip byte for byte.
    assert json.loads(json.dumps(rows, ensure_ascii=False)) == rows


def test_to_rgb_by_hand():
    """16-bit 40000 → round(40000/257) = round(155.6) = 156; a half-transparent red (255, 0, 0, 128) on
    white → G = B = 255·(1 − 128/255) = 127; an LA pixel (10, 0) (fully transparent) → white; CMYK
    (0, 255, 255, 0) is pure red."""
    import numpy as np

    g16 = Image.fromarray(np.full((2, 3), 40000, dtype=np.uint16))
    assert g16.mode.startswith("I;16")
    out = adapters.to_rgb(g16)
    assert out.mode == "RGB" and out.size == (3, 2) and out.getpixel((0, 0)) == (156, 156, 156)
    assert adapters.to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 128))).getpixel((0, 0)) == (255, 127, 127)
    assert adapters.to_rgb(Image.new("LA", (2, 2), (10, 0))).getpixel((1, 1)) == (255, 255, 255)
    assert adapters.to_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)


def test_non_ascii_native_ids_stay_distinct(tmp_path, vqa_parquet):
    """A-OKVQA-style string ids that differ only in non-ASCII characters ("問1", "題1") used to sanitise to
    the same id ("aokvqa-_1"), and the second row was rejected as a duplicate."""
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    vqa_parquet("aokvqa", f, n=3, bad=False)
    table = pq.read_table(f)
    ids = ["問1", "題1", "q002"]
    pq.write_table(table.set_column(table.schema.get_field_index("question_id"), "question_id",
                                    pa.array(ids, pa.string())), f)
    rows, rejected = adapters.read_source("aokvqa", str(f), category="perception", out_dir=tmp_path / "o",
                                          max_rejected_share=0.0)
    assert not rejected and len({r["id"] for r in rows}) == 3
    assert rows[2]["id"] == "aokvqa-q002", "ASCII ids are unchanged"
    assert all(r["id"].startswith("aokvqa-_1-") for r in rows[:2])


def test_text_only_scienceqa_rows_are_skipped_not_counted_as_malformed(tmp_path, vqa_parquet):
    """derek-thomas/ScienceQA is about half text-only rows (``image`` None): 6 image rows + 6 text-only + 1
    bad answer index. The share that counts is 1 broken of 7 considered = 14%, under a 0.2 limit; before,
    7 of 13 = 54% stopped the build. All 7 stay listed in ``rejected``, each with its reason."""
    import pyarrow.parquet as pq

    f = tmp_path / "sqa.parquet"
    vqa_parquet("scienceqa", f, n=6, bad=True)  # 6 good, then 1 text-only, 1 bad index
    table = pq.read_table(f)
    rows = table.to_pylist()
    rows += [{**rows[0], "image": None, "question": f"Text only {i}?"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), f)
    samples, rejected = adapters.read_source("scienceqa", str(f), category="math", out_dir=tmp_path / "o",
                                             max_rejected_share=0.2)
    assert len(samples) == 6 and len(rejected) == 7
    assert sum("text-only" in r["reason"] for r in rejected) == 6
    with pytest.raises(DataError, match=r"1 of 7 rows rejected"):
        adapters.read_source("scienceqa", str(f), category="math", out_dir=tmp_path / "o", max_rejected_share=0.1)
