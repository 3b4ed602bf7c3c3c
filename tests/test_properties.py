"""Property-based tests (hypothesis): the parsers that face hostile input never crash, and what they
accept round-trips. Example counts stay small so the file runs in seconds."""

from __future__ import annotations

import json
import re

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from srcal.run import jsonl  # noqa: E402
from srcal.config import RecipeError, describe, load_recipe  # noqa: E402
from srcal.data.rap import ParsedRAP, parse_rap, render_rap  # noqa: E402

# database=None: no .hypothesis/ directory in the tree; a failure prints its example, which is enough here.
FAST = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(FAST, max_examples=40)

# Strings as Python can hold them: lone surrogates included (they reach us from decoders with errors=
# "surrogateescape" and from json.loads of "\ud800"), plus the characters str.splitlines() breaks at.
any_text = st.text(st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                             st.sampled_from("\n\r\x85\u2028\u2029\x0b\x0c\x1c\"\\{}[]")), max_size=40)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12)
row = st.dictionaries(any_text, json_value, max_size=5)


# ------------------------------------------------------------------------------------------------ JSONL


@FAST
@given(data=st.binary(max_size=3000))
def test_jsonl_reader_never_crashes_on_arbitrary_bytes(tmp_path, data):
    p = tmp_path / "x.jsonl"
    p.write_bytes(data)
    rejected: list[dict] = []
    rows = jsonl.read_jsonl(p, rejected)
    assert all(isinstance(r, dict) for r in rows)
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert all(r["file"] == str(p) and 1 <= r["line"] <= n_lines and r["reason"] for r in rejected)
    assert len(rows) + len(rejected) <= n_lines


@FEW
@given(rows=st.lists(row, max_size=6), sort_keys=st.booleans())
def test_jsonl_writer_round_trips_any_rows(tmp_path, rows, sort_keys):
    p = tmp_path / "x.jsonl"
    jsonl.write_jsonl(p, rows, sort_keys=sort_keys)
    rejected: list[dict] = []
    assert jsonl.read_jsonl(p, rejected) == rows
    assert rejected == []
    assert p.read_bytes().count(b"\n") == len(rows)  # one line per row, whatever the strings hold


@FEW
@given(rows=st.lists(row, min_size=1, max_size=4), cut=st.integers(min_value=1))
def test_a_torn_append_costs_only_the_torn_row(tmp_path, rows, cut):
    """A writer killed mid-line: every complete row is read back, the torn one is quarantined (or, if
    the cut happens to leave valid JSON of an object, read — never a crash, never an earlier row lost)."""
    p = tmp_path / "x.jsonl"
    jsonl.write_jsonl(p, rows[:-1])
    last = (jsonl.dumps_line(rows[-1]) + "\n").encode()
    with open(p, "ab") as f:
        f.write(last[: cut % len(last)])
    got = jsonl.read_jsonl(p, [])
    assert got[: len(rows) - 1] == rows[:-1] and len(got) <= len(rows)


# -------------------------------------------------------------------------------------------------- RAP


@FAST
@given(text=any_text | st.text(max_size=300), prefix=st.sampled_from(["Answer:", "", " ", "A:", "[ans]"]) | any_text)
def test_rap_parser_never_crashes(text, prefix):
    got = parse_rap(text, prefix)
    assert isinstance(got, ParsedRAP)
    assert got.ok == (got.error is None)
    if got.ok:
        assert got.answer and got.sentences


ANSWER_RE = re.compile(re.escape("Answer:"), re.IGNORECASE)  # what parse_rap looks for (case-folded)
sentence_body = st.text(st.characters(blacklist_characters=".?!\n\r", blacklist_categories=("Cs",)),
                        min_size=1, max_size=30).map(str.strip).filter(lambda s: s and not ANSWER_RE.search(s))
answer_text = st.text(st.characters(blacklist_characters="\n\r<", blacklist_categories=("Cs",)), min_size=1,
                      max_size=20).map(str.strip).filter(lambda a: a and not a.endswith(".")
                                                          and not ANSWER_RE.search(a))


@FAST
@given(bodies=st.lists(sentence_body, min_size=1, max_size=5), answer=answer_text)
def test_a_formatted_rap_parses_back(bodies, answer):
    sentences = [b + "." for b in bodies]
    got = parse_rap(render_rap(sentences, answer))
    assert got.ok, got.error
    assert got.answer == answer
    assert got.sentences == sentences


# --------------------------------------------------------------------------------------- recipe overrides

KEYS = [k for k, _, _ in describe()]
odd_values = st.sampled_from(["", "[", "{", "'", '"', ": x", "- a", "&a", "*a", "!!python/object/apply:os.system",
                              "1e400", "-0", "0x10", ".inf", "null", "~", "[1, [2]]", "{a: {b: 1}}", "\x00", "=",
                              "9" * 5000])


@settings(FAST, max_examples=60)
@given(key=st.sampled_from(KEYS) | st.text(max_size=20)
       | st.builds(lambda k, s: f"{k}{s}", st.sampled_from(KEYS), st.sampled_from([".0", "[0]", "[-1]", ".x", "[", "]"])),
       value=odd_values | st.text(max_size=20) | st.integers().map(str) | st.floats().map(str))
def test_recipe_overrides_give_a_recipe_or_a_recipe_error(key, value):
    try:
        recipe = load_recipe("tiny", [f"{key}={value}"])
    except RecipeError:
        return
    assert recipe.to_dict()


def _get(d, dotted):
    for part in dotted.split("."):
        d = d[part]
    return d


@settings(FAST, max_examples=40)
@given(key=st.sampled_from(KEYS),
       value=st.none() | st.booleans() | st.integers(-1000, 10**6) | st.floats(-1e6, 1e6, allow_nan=False)
       | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12))
def test_accepted_overrides_round_trip(key, value):
    """A value the recipe accepts, written back as an override, gives the same recipe."""
    try:
        recipe = load_recipe("tiny", [f"{key}={json.dumps(value)}"])
    except RecipeError:
        return
    got = _get(recipe.to_dict(), key)
    again = load_recipe("tiny", [f"{key}={json.dumps(got)}"])
    assert again.to_dict() == recipe.to_dict()
