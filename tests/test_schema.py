"""srcal.data.schema: validation, quarantine of bad rows, the rejected-share threshold, deterministic writes."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from srcal.data.schema import DataError, read_jsonl, validate_sample, write_jsonl


def good(i: int = 0, **kw) -> dict:
    return {"id": f"s{i}", "image": f"images/s{i}.png", "question": "What colour?", "answer": "red",
            "category": "perception", "source": "unit", **kw}


def test_validate_sample_accepts_good_and_names_each_bad_field():
    assert validate_sample(good()) == []
    assert validate_sample(good(choices=["a", "b"], scene={"kind": "bars"}, rationale="x", extra=1)) == []
    problems = validate_sample({"id": "x", "image": "/abs.png", "question": "", "answer": 3,
                                "category": "poetry", "choices": ["only one"]})
    fields = [p.split(":")[0] for p in problems]
    assert fields == ["question", "answer", "source", "category", "choices", "image"]
    assert "unknown category 'poetry'" in problems[3]
    assert validate_sample(["not", "a", "dict"]) == ["<row>: expected a JSON object, got list"]
    assert validate_sample(good(image="../escape.png"))[0].startswith("image:")


def test_read_jsonl_quarantines_bad_rows_with_file_line_id_field(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(8):
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"s{i}.png")
    (tmp_path / "images" / "s5.png").write_bytes(b"not a png")
    lines = [json.dumps(good(i)) for i in range(5)]
    lines += [
        json.dumps(good(5)),                     # line 6: unreadable image
        "{not json",                             # line 7: malformed
        json.dumps(good(6, category="poetry")),  # line 8: unknown category
        json.dumps(good(7, image="images/missing.png")),  # line 9: missing image
        json.dumps(good(0)),                     # line 10: duplicate id
        "",                                      # blank: ignored
    ]
    f = tmp_path / "rft.jsonl"
    f.write_text("\n".join(lines) + "\n")
    rows, rejected = read_jsonl(f, images_root=tmp_path, max_rejected_share=0.6)
    assert [r["id"] for r in rows] == ["s0", "s1", "s2", "s3", "s4"]
    by_line = {r["line"]: r for r in rejected}
    assert sorted(by_line) == [6, 7, 8, 9, 10]
    assert all(r["file"] == str(f) for r in rejected)
    assert by_line[6]["field"] == "image" and "unreadable image" in by_line[6]["reason"]
    assert by_line[7]["id"] is None and by_line[7]["reason"].startswith("malformed JSON")
    assert by_line[8]["field"] == "category" and by_line[8]["id"] == "s6"
    assert by_line[9]["field"] == "image" and "not found" in by_line[9]["reason"]
    assert by_line[10]["field"] == "id" and "duplicate" in by_line[10]["reason"]
    # Without images_root the image files are not checked.
    rows, rejected = read_jsonl(f, max_rejected_share=1.0)
    assert len(rows) == 7 and len(rejected) == 3


def test_read_jsonl_stops_above_the_threshold_naming_the_file(tmp_path):
    f = tmp_path / "calib.jsonl"
    f.write_text("\n".join([json.dumps(good(i)) for i in range(9)] + ['{"id": "bad"}']) + "\n")
    read_jsonl(f, max_rejected_share=0.1)  # 1 of 10 = 10%: allowed
    with pytest.raises(DataError) as e:
        read_jsonl(f, max_rejected_share=0.05)
    msg = str(e.value)
    assert str(f) in msg and "1 of 10" in msg and "line 10" in msg and "max_rejected_share" in msg


def test_write_jsonl_is_deterministic_and_round_trips(tmp_path):
    rows = [good(1, scene={"b": 1, "a": [2, 1]}, question="Où est le cercle ?"), good(2)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [dict(reversed(list(r.items()))) for r in rows])
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes(), "key order does not matter"
    assert "Où" in a.decode("utf-8") and a.count(b"\n") == 2
    assert read_jsonl(tmp_path / "a.jsonl", max_rejected_share=0.0)[0] == rows
