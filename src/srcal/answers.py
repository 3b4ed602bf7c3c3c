"""Is an answer right? The one scoring rule that evaluation, the teacher filter, curation and the search's
diversity report all use, so that "correct" means the same thing at every stage.

* The answer of a response is its ``Answer:`` line when there is one, else the whole response when it is
  a single line (a short-answer base model says just ``red``): :func:`response_answer`.
* Rules per sample (:func:`score_answer`):

  - multiple-choice rows (``choices``): the option letter (MMStar/ScienceQA/AI2D-style ``B`` / ``(B)`` /
    ``B. text``) or the option text;
  - shapes world: exact match after normalisation (:func:`answers_match`);
  - ChartQA-style numeric answers: relaxed accuracy, right when within 5% of a non-zero target (a trailing
    ``%`` divides by 100), else case-insensitive exact match (lmms-eval ``chartqa/utils.py``);
  - anything else: exact match after normalisation.
* Normalisation (:func:`normalize_answer`): case-insensitive; hyphens and runs of whitespace become one
  space; the articles a/an/the and trailing punctuation are dropped; number words zero..twenty equal their
  digits ("3" == "three"); "no" is *not* read as 0 in an answer, since it is the yes/no answer "no".
"""

from __future__ import annotations

import re

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
"""The number words the shapes world writes (its counts and values stay within 0..20) and that answers
may use for digits."""

_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str | None) -> str:
    """The comparable form of an answer (rules in the module docstring)."""
    if text is None:
        return ""
    t = text.lower().replace("-", " ").strip().strip("\"'`")
    t = re.sub(r"[.!?,;:]+$", "", t).strip()
    words = [w for w in t.split() if w not in _ARTICLES]
    words = [str(NUMBER_WORDS.index(w)) if w in NUMBER_WORDS else w for w in words]
    return " ".join(words)


def answers_match(pred: str | None, gold: str) -> bool:
    """True when ``pred`` is the gold answer up to normalisation; None / empty never matches."""
    p = normalize_answer(pred)
    return bool(p) and p == normalize_answer(gold)


_LETTER_RX = re.compile(r"^\s*[\(\[]?([A-Z])[\)\]]?(?:[.:)\s]|$)")


def extract_letter(text: str, n_choices: int) -> str | None:
    """The option letter a response starts with (``B``, ``(B)``, ``B. cat``, ``B: cat``), if valid."""
    m = _LETTER_RX.match(text or "")
    if m and ord(m.group(1)) - 65 < n_choices:
        return m.group(1)
    return None


def to_float(text: str) -> float | None:
    """A number as ChartQA writes it (``1,234``, ``12%`` = 0.12), else None."""
    t = text.strip().replace(",", "")
    pct = t.endswith("%")
    if pct:
        t = t[:-1].strip()
    try:
        v = float(t)
    except ValueError:
        return None
    return v / 100 if pct else v


def relaxed_match(pred: str, target: str, tolerance: float = 0.05) -> bool:
    """ChartQA's relaxed accuracy: numbers within ``tolerance`` of a non-zero target, else exact match
    ignoring case (lmms-eval ``chartqa/utils.py``: no other normalisation)."""
    p, t = to_float(pred), to_float(target)
    if p is not None and t is not None and t != 0:
        return abs(p - t) / abs(t) <= tolerance
    return pred.strip().lower() == target.strip().lower()


def score_answer(sample: dict, answer: str | None) -> bool:
    """Is ``answer`` (already extracted from the response) right for ``sample``? Rules in the module doc."""
    if answer is None or not str(answer).strip():
        return False
    answer = str(answer).strip()
    gold = str(sample["answer"])
    choices = sample.get("choices")
    if choices:
        letter = extract_letter(answer, len(choices))
        if gold in choices:
            gold_letter = chr(65 + choices.index(gold))
        else:  # a dataset that stores the letter itself
            gold_letter = gold.strip().upper() if len(gold.strip()) == 1 else None
        if letter is not None and gold_letter is not None:
            return letter == gold_letter
        return normalize_answer(answer) == normalize_answer(gold)
    if sample.get("source") == "shapes" or sample.get("scene") is not None:
        return answers_match(answer, gold)
    if to_float(gold) is not None:
        return relaxed_match(answer, gold)
    return answers_match(answer, gold)


def response_answer(text: str, prefix: str = "Answer:") -> str | None:
    """The answer a response gives: its ``Answer:`` line, else the whole response (short-answer models)."""
    from srcal.data.rap import parse_rap, strip_end_markers

    parsed = parse_rap(text, prefix)
    if parsed.answer is not None:
        return parsed.answer
    bare = strip_end_markers(text).strip()
    if "\n" in bare or not bare:
        return None  # a multi-line response without an answer line has no answer to score
    return bare.rstrip(".").strip() or None


def response_correct(sample: dict, text: str, prefix: str = "Answer:") -> bool:
    """Is a whole response right for ``sample``: :func:`score_answer` of its :func:`response_answer`."""
    return score_answer(sample, response_answer(text, prefix))
