"""srcal.run.jsonl: the one JSONL reader/writer, and a source walk that keeps every stage on it."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest

from srcal.run import jsonl
from srcal.data.schema import read_jsonl as read_samples

SEPARATORS = "\u0085\u2028\u2029\x0b\x0c\x1c\x1d\x1e"  # every character str.splitlines() breaks at, bar \r \n


def test_unicode_line_separators_stay_inside_rows(tmp_path):
    """str.splitlines() breaks at U+0085, U+2028, U+2029 (and VT, FF, FS, GS, RS); the reader must not."""
    rows = [{"id": "a", "text": f"one{SEPARATORS}two"}, {"id": "b", "text": "plain"}]
    p = tmp_path / "x.jsonl"
    jsonl.write_jsonl(p, rows)
    assert "\u0085\u2028\u2029" in p.read_text(encoding="utf-8")  # raw (JSON escapes only VT…RS, controls)
    assert len(p.read_text(encoding="utf-8").splitlines()) > 2  # what the old readers would have seen
    rejected: list[dict] = []
    assert jsonl.read_jsonl(p, rejected) == rows
    assert rejected == []


def test_each_line_is_decoded_on_its_own(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": 1}\n{"id": "\xff\xfe"}\n\n{"id": 3}\n')
    rejected: list[dict] = []
    assert jsonl.read_jsonl(p, rejected) == [{"id": 1}, {"id": 3}]
    assert [(r["file"], r["line"], r["field"]) for r in rejected] == [(str(p), 2, None)]
    assert "not valid UTF-8" in rejected[0]["reason"]


def test_malformed_non_object_and_torn_last_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": 1}\n{"id": \n[1, 2]\n1e999999\n' + b"9" * 5000 + b'\n{"id": 2}\n{"id": 3, "te')
    rejected: list[dict] = []
    assert jsonl.read_jsonl(p, rejected) == [{"id": 1}, {"id": 2}]
    reasons = {r["line"]: r["reason"] for r in rejected}
    assert reasons[2].startswith("malformed JSON")
    assert reasons[3] == "expected a JSON object, got list"
    assert reasons[4] == "expected a JSON object, got float"  # 1e999999 parses as inf: a number, not a row
    assert reasons[5].startswith("malformed JSON")  # 5,000 digits: Python's int-conversion limit, not a crash
    assert reasons[7].startswith("torn last line")
    assert jsonl.is_torn(p)
    assert jsonl.read_jsonl(p, objects_only=False)[1] == [1, 2]


def test_last_line_without_newline_that_parses_is_a_row(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": 1}\r\n{"id": 2}')  # CRLF and no final newline: a hand-written file
    assert jsonl.read_jsonl(p) == [{"id": 1}, {"id": 2}]


def test_runaway_line_is_quarantined_without_holding_it(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": 1}\n{"q": "' + b"x" * 10_000 + b'"}\n{"id": 3}\n')
    rejected: list[dict] = []
    assert jsonl.read_jsonl(p, rejected, max_line_bytes=100) == [{"id": 1}, {"id": 3}]
    assert [(r["line"], r["reason"]) for r in rejected] == [(2, "line longer than 100 bytes")]


def test_deep_nesting_is_quarantined(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"[" * 100_000 + b"\n" + b'{"id": 1}\n')
    rejected: list[dict] = []
    assert jsonl.read_jsonl(p, rejected) == [{"id": 1}]
    assert rejected[0]["line"] == 1


def test_without_a_rejected_list_bad_lines_are_logged_with_file_and_line(tmp_path, caplog):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": 1}\nnot json\n')
    with caplog.at_level(logging.WARNING, logger="srcal.run.jsonl"):
        assert jsonl.read_jsonl(p) == [{"id": 1}]
    assert f"{p}:2: malformed JSON" in caplog.text


def test_missing_file(tmp_path):
    assert jsonl.read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        jsonl.read_jsonl(tmp_path / "none.jsonl")


def test_writer_round_trips_lone_surrogates_and_is_byte_stable(tmp_path):
    rows = [{"b": "\ud800 lone", "a": "é\u2028"}, {"z": 1, "y": [None, True, 1.5]}]
    p, q = tmp_path / "p.jsonl", tmp_path / "q.jsonl"
    jsonl.write_jsonl(p, rows, sort_keys=True)
    jsonl.write_jsonl(q, [dict(reversed(list(r.items()))) for r in rows], sort_keys=True)
    assert p.read_bytes() == q.read_bytes()
    assert jsonl.read_jsonl(p) == rows
    jsonl.append_jsonl(p, [{"c": "\U0001f600"}])
    assert jsonl.read_jsonl(p)[-1] == {"c": "\U0001f600"}
    assert not list(tmp_path.glob("*.tmp"))


def test_sample_reader_quarantines_a_non_utf8_row_instead_of_aborting(tmp_path):
    """The reported bug: one row that is not UTF-8 made ``srcal eval`` fail with UnicodeDecodeError."""
    good = {"id": "s1", "image": "images/a.png", "question": "q\u2028?", "answer": "a", "category": "math",
            "source": "t"}
    p = tmp_path / "eval.jsonl"
    p.write_bytes(json.dumps(good, ensure_ascii=False).encode() + b'\n{"id": "s2", "question": "\xc3\x28"}\n')
    rows, rejected = read_samples(p, max_rejected_share=0.5)
    assert rows == [good]
    assert [(r["line"], r["field"]) for r in rejected] == [(2, None)]
    assert "not valid UTF-8" in rejected[0]["reason"]


def _candidate(sid: str, index: int, text: str) -> dict:
    return {"sample_id": sid, "id": f"{sid}#c{index}", "index": index, "text": text, "answer": "2",
            "n_tokens": 7, "sentences": 1}


def test_u0085_candidate_survives_search_resume_merge_rscorer_data_score_and_curate(tmp_path):
    """End to end over the real writers/readers: a candidate containing U+0085 was dropped by search's
    resume reader (64 rows written, 63 counted) and crashed ``rscorer-data`` with JSONDecodeError."""
    from srcal.curate import load_candidates
    from srcal.scorer.data import model_candidates
    from srcal.scorer.score import group_candidates
    from srcal.search.candidates import CandidateWriter
    from srcal.search.stage import run_search_merge

    odd = "There are two circles.\u0085 They are red\u2028and small.\u2029\nAnswer: 2"
    shard0, shard1 = tmp_path / "s0", tmp_path / "s1"
    w = CandidateWriter(shard0)
    w.commit([_candidate("a", 0, odd), _candidate("a", 1, "Answer: 3")], [], ["a"])
    w = CandidateWriter(shard0)  # resume: the reopened writer must keep every completed row
    assert w.candidates()[0]["text"] == odd and len(w.candidates()) == 2
    CandidateWriter(shard1).commit([_candidate("b", 0, "Answer: 1"), _candidate("b", 1, odd)], [], ["b"])

    merged = tmp_path / "merged"
    summary = run_search_merge(None, {"shard0": shard0, "shard1": shard1}, merged)
    assert summary["counts"]["candidates"] == 4 and summary["counts"]["rejected"] == 0
    texts = [r["text"] for r in jsonl.read_jsonl(merged / "candidates.jsonl")]
    assert texts == [odd, "Answer: 3", "Answer: 1", odd]

    by = model_candidates({"candidates": merged})  # the rscorer-data reader
    flat = [t for v in by.values() for c in v for t in (c if isinstance(c, tuple) else (c,))]
    assert flat.count(odd) == 2
    assert group_candidates(jsonl.read_jsonl(merged / "candidates.jsonl"))["a"][0]["text"] == odd  # score
    assert load_candidates(merged / "candidates.jsonl")["b"]["candidates"][1]["text"] == odd  # curate


# ------------------------------------------------------------------------ every JSONL read goes through here

SRC = Path(__file__).resolve().parents[1] / "src" / "srcal"
# Line-by-line json.loads that is not a JSONL *file*: the vLLM worker's stdin/stdout pipe protocol
# (ASCII JSON written by json.dumps with its default ensure_ascii=True) and --set values in the pipeline.
ALLOWED_LOOP_LOADS = {"serve/vllm_worker.py", "serve/vllm_child.py", "pipeline.py"}
ALLOWED_SPLITLINES = {"bench/__init__.py"}  # /proc/cpuinfo


def _names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _loads_of(nodes, names: set[str]) -> list[ast.Call]:
    """``json.loads(x)`` calls under ``nodes`` whose argument is built from a loop variable in ``names``
    without reading a file (``line``, ``line.strip()``, ``raw.decode()``: one line of a file)."""
    out = []
    for sub in nodes:
        for call in ast.walk(sub):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "loads"
                    and getattr(call.func.value, "id", "") == "json" and call.args):
                continue
            reads = any(isinstance(c, ast.Call) and getattr(c.func, "attr", "") in ("read_text", "read", "read_bytes")
                        for c in ast.walk(call.args[0]))
            if _names(call.args[0]) & names and not reads:
                out.append(call)
    return out


def jsonl_violations(source: str, name: str) -> list[str]:
    """Ways of reading JSONL that bypass :mod:`srcal.run.jsonl`, found in one module's source: a private
    ``_*jsonl*`` helper, ``.splitlines()`` on file text, and ``json.loads`` of a loop variable (parsing
    line by line). Loading a whole JSON file inside a loop is fine."""
    out = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and "jsonl" in node.name and node.name.startswith("_"):
            out.append(f"{name}:{node.lineno}: private JSONL helper {node.name}()")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "splitlines":
            recv = node.func.value
            if (isinstance(recv, ast.Call) and isinstance(recv.func, ast.Attribute)
                    and recv.func.attr in ("read_text", "read", "decode") and name not in ALLOWED_SPLITLINES):
                out.append(f"{name}:{node.lineno}: .splitlines() on file text")
        if name in ALLOWED_LOOP_LOADS:
            continue
        if isinstance(node, ast.For):
            for call in _loads_of(node.body, _names(node.target)):
                out.append(f"{name}:{call.lineno}: json.loads in a loop (line-by-line JSONL?)")
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)):
            targets = set().union(*(_names(g.target) for g in node.generators))
            elts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for call in _loads_of(elts, targets):
                out.append(f"{name}:{call.lineno}: json.loads in a comprehension (line-by-line JSONL?)")
    return sorted(set(out))


def test_the_walker_catches_the_old_readers():
    old = '''
def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

def merge(d):
    for line in (d / "candidates.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)

def report(path):
    with path.open() as f:
        return [json.loads(x) for x in f if x.strip()]
'''
    found = jsonl_violations(old, "old.py")
    assert any("private JSONL helper _read_jsonl" in v for v in found)
    assert sum(".splitlines() on file text" in v for v in found) == 2
    assert any(":7: json.loads in a loop" in v for v in found)
    assert any(":11: json.loads in a comprehension" in v for v in found)


def test_every_jsonl_read_in_the_package_goes_through_srcal_run_jsonl():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "jsonl.py" and path.parent == SRC / "run":
            continue
        found += jsonl_violations(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))
    assert found == [], "read JSONL with srcal.run.jsonl.read_jsonl/iter_jsonl instead:\n" + "\n".join(found)
