"""The RAP text format: rendering, sentence splitting, and parsing of messy generated text."""

from __future__ import annotations

import pytest

from srcal.data.rap import parse_rap, render_rap, split_sentences


def test_render_then_parse_roundtrip():
    text = render_rap(["The red bar is 5.", " The blue bar is 3. "], "8")
    assert text == "The red bar is 5. The blue bar is 3.\nAnswer: 8"
    p = parse_rap(text)
    assert p.ok and p.error is None
    assert p.answer == "8"
    assert p.sentences == ["The red bar is 5.", "The blue bar is 3."]
    assert p.rationale == "The red bar is 5. The blue bar is 3."


def test_render_custom_prefix_and_no_sentences():
    assert render_rap([], "yes", prefix="Final:") == "Final: yes"
    assert parse_rap("It is so.\nFinal: yes", prefix="Final:").answer == "yes"


def test_split_sentences_keeps_decimals_and_delimiters():
    assert split_sentences("The bar is 3.5 high. Is it? Yes!\nNext line") == [
        "The bar is 3.5 high.",
        "Is it?",
        "Yes!",
        "Next line",
    ]
    assert split_sentences("Wait... really?! ok.") == ["Wait...", "really?!", "ok."]
    assert split_sentences("  ") == []
    assert split_sentences("Ends with 3.") == ["Ends with 3."]
    assert split_sentences("a;b", delimiters=(";",)) == ["a;", "b"]


def test_missing_answer_line():
    p = parse_rap("There is a red circle in the top left. So it is red.")
    assert not p.ok and p.answer is None
    assert "no 'Answer:' line" in p.error
    assert p.sentences == ["There is a red circle in the top left.", "So it is red."]


def test_two_answer_lines_use_the_first():
    p = parse_rap("The red bar is 5.\nAnswer: 5\nAnswer: 6")
    assert p.answer == "5"
    assert not p.ok and "2 answer lines" in p.error


def test_no_rationale():
    p = parse_rap("Answer: red")
    assert p.answer == "red" and p.sentences == []
    assert not p.ok and "no rationale" in p.error


def test_trailing_junk_and_end_markers():
    p = parse_rap("The red bar is 5.\nAnswer: 5.\nblah blah")
    assert p.answer == "5" and not p.ok and "after the answer" in p.error
    clean = parse_rap("The red bar is 5.\nAnswer: 5</s><|im_end|>\n  ")
    assert clean.ok and clean.answer == "5"


def test_whitespace_case_and_inline_prefix():
    p = parse_rap("  The red bar is 5.   \n\n   answer:    5  \n")
    assert p.ok and p.answer == "5"
    inline = parse_rap("The red bar is 5. Answer: 5")
    assert inline.answer == "5" and not inline.ok and "start of a line" in inline.error
    assert inline.sentences == ["The red bar is 5."]


def test_decimal_answer_kept_and_empty_answer():
    assert parse_rap("It is 3.5.\nAnswer: 3.5").answer == "3.5"
    p = parse_rap("The red bar is 5.\nAnswer:   ")
    assert p.answer is None and not p.ok and p.error == "empty answer"


@pytest.mark.parametrize("bad", [None, 3, b"bytes"])
def test_never_raises_on_non_text(bad):
    p = parse_rap(bad)
    assert not p.ok and p.answer is None and p.error
