"""The rationale-answer pair (RAP) text format: rationale sentences, then one line ``Answer: <answer>``.

The paper fixes that the RFT model answers with a rationale followed by the answer, but publishes no
template. Ours is the simplest one a tiny model can learn and a parser can check::

    The blue bar is 5. The red bar is 3. 5 plus 3 is 8. So the answer is 8.
    Answer: 8

``render_rap`` writes it, ``parse_rap`` reads it back from *generated* text, and ``split_sentences`` is the
one sentence splitter shared by the oracle (claims are sentences) and sentence-level beam search (branches
are sentences), so both agree on what a sentence is.

Parsing policy (decided here, relied on by ``srcal.world.oracle.assess`` and the evaluation):

* The answer is *extracted* leniently, the *format* is judged strictly. ``ParsedRAP.answer`` is filled
  whenever an answer prefix can be found; ``ParsedRAP.ok`` is True only for a clean RAP: at least one
  rationale sentence, exactly one answer line that starts on its own line, a non-empty answer, and
  nothing but whitespace / end-of-sequence markers after it. Every other case sets ``error`` to the
  reason (the first one found), so a report can say *why* outputs are not in RAP form.
* Several answer lines: the **first** one is the answer (what the model committed to first); the rest is
  treated as trailing text.
* The prefix is matched case-insensitively (``answer:`` counts), at the start of a line or, as a
  fallback, anywhere in the text (``... is red. Answer: red`` yields ``red`` with ``ok=False``).
* The answer is the rest of its line, stripped, with one trailing ``.`` removed (``Answer: red.`` → ``red``)
  unless that would break a decimal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Markers a decoder may leave after the answer; they are not "trailing junk".
_EOS_MARKERS = ("</s>", "<|im_end|>", "<|endoftext|>", "<eos>", "<pad>")


@dataclass
class ParsedRAP:
    """One response read as a RAP. ``ok`` = clean RAP form; ``error`` says why not (None when ok)."""

    rationale: str
    sentences: list[str]
    answer: str | None
    ok: bool
    error: str | None


def render_rap(sentences: list[str], answer: str, prefix: str = "Answer:") -> str:
    """Join rationale sentences with single spaces, then put the answer on its own final line."""
    rationale = " ".join(s.strip() for s in sentences if s.strip())
    line = f"{prefix} {answer}".rstrip()
    return f"{rationale}\n{line}" if rationale else line


def split_sentences(text: str, delimiters=(".", "?", "!", "\n")) -> list[str]:
    """Split ``text`` after each delimiter; keep the delimiter (except newlines) with its sentence.

    A ``.`` between two digits (``3.5``) is a decimal point, not a sentence end. Runs of delimiters
    (``?!``, ``...``) end one sentence. Empty pieces are dropped and each sentence is stripped.
    """
    delims = set(delimiters)
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in delims:
            if ch == "." and 0 < i < n - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
                cur.append(ch)
                i += 1
                continue
            # absorb the whole run of delimiters into this sentence end
            while i < n and text[i] in delims:
                if text[i] != "\n":
                    cur.append(text[i])
                i += 1
            piece = "".join(cur).strip()
            if piece:
                out.append(piece)
            cur = []
            continue
        cur.append(ch)
        i += 1
    piece = "".join(cur).strip()
    if piece:
        out.append(piece)
    return out


def _clean_answer(raw: str) -> str:
    """The answer line's text without end markers and without one final full stop ("8." → "8")."""
    ans = strip_end_markers(raw).strip()
    if ans.endswith("."):
        ans = ans[:-1].rstrip()
    return ans


def _is_only_markers(text: str) -> bool:
    for marker in _EOS_MARKERS:
        text = text.replace(marker, "")
    return not text.strip()


def parse_rap(text: str, prefix: str = "Answer:") -> ParsedRAP:
    """Read ``text`` as a RAP. Never raises: anything unusable comes back with ``ok=False`` and a reason."""
    if not isinstance(text, str):
        return ParsedRAP("", [], None, False, f"not text: {type(text).__name__}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    pat = re.compile(re.escape(prefix.strip()), re.IGNORECASE) if prefix.strip() else None
    if pat is None:
        return ParsedRAP(text.strip(), split_sentences(text), None, False, "empty answer prefix")

    line_starts = [
        m
        for m in pat.finditer(text)
        if text[: m.start()].rstrip(" \t").endswith("\n") or not text[: m.start()].strip()
    ]
    anywhere = list(pat.finditer(text))
    error: str | None = None
    if line_starts:
        first = line_starts[0]
        if len(anywhere) > 1:
            error = f"{len(anywhere)} answer lines (the first is used)"
    elif anywhere:
        first = anywhere[0]
        error = f"'{prefix}' is not at the start of a line"
        if len(anywhere) > 1:
            error += f"; {len(anywhere)} answer lines (the first is used)"
    else:
        rationale = strip_end_markers(text).strip()
        return ParsedRAP(rationale, split_sentences(rationale), None, False, f"no '{prefix}' line")

    rationale = text[: first.start()].strip()
    rest = text[first.end() :]
    answer_line, _, trailing = rest.partition("\n")
    answer = _clean_answer(answer_line) or None
    sentences = split_sentences(rationale)
    if error is None:
        if answer is None:
            error = "empty answer"
        elif not sentences:
            error = "no rationale before the answer line"
        elif not _is_only_markers(trailing):
            error = "text after the answer line"
    return ParsedRAP(rationale, sentences, answer, error is None, error)


def strip_end_markers(text: str) -> str:
    """``text`` without the end-of-sequence markers a decoder may leave in it (``</s>``, ``<|im_end|>`` …)."""
    for marker in _EOS_MARKERS:
        text = text.replace(marker, "")
    return text
