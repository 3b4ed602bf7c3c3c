"""``question_text``: multiple-choice options reach the model exactly once (issue 12, bug 5).

MMStar embeds its options in the question as "Options: A: x, B: y" and the mmstar adapter also fills
``choices`` from them; the old check knew only ``A.``/``(A)`` and listed every option a second time.
The MMStar strings below follow the release's layout (the ``Hint: … Choices: (A)``
form is how MMStar carries the items it took from MathVista).
"""

from __future__ import annotations

import pytest

from srcal.data import adapters
from srcal.models.loading import plain_question_messages, question_text

MMSTAR_QUESTIONS = [
    ("Which option describe the object relationship in the image correctly?\nOptions: A: The suitcase is on "
     "the book., B: The suitcase is beneath the cat., C: The suitcase is beneath the bed., D: The suitcase is "
     "beneath the book.", "B"),
    ("What is the main feature in the background of the image?\nOptions: A: Mountains, B: A river, "
     "C: A city skyline, D: A beach", "A"),
    ("How many people are in the image, counting those in the mirror?\nOptions: A: 1, B: 2, C: 3, D: 4", "C"),
    ("Which mood does this image convey?\nOptions: A: Cozy, warm and calm, B: Anxious, C: Happy, D: Sad", "A"),
]


@pytest.mark.parametrize(("question", "letter"), MMSTAR_QUESTIONS)
def test_mmstar_rows_show_each_option_once(question, letter):
    """Through the real adapter: its parsed ``choices`` must not be listed again after the question."""
    fields, _, _ = adapters.mmstar({"index": 7, "question": question, "answer": letter, "image": None})
    assert len(fields["choices"]) == 4
    text = question_text(fields["question"], fields["choices"])
    assert text == question
    for choice in fields["choices"]:
        assert text.count(choice) == question.count(choice)
    msgs = plain_question_messages(fields["question"], fields["choices"])
    assert msgs[0]["content"][1]["text"] == question


@pytest.mark.parametrize("question", [
    "Pick one.\nA. red\nB. blue\nC. green",                      # separate lines, A.
    "Pick one.\nA) red\nB) blue\nC) green",                      # A)
    "Pick one.\n(A) red\n(B) blue\n(C) green",                   # (A)
    "Pick one. (A) red (B) blue (C) green",                      # (A) inline
    "Pick one.\nOptions: A: red, B: blue, C: green",             # MMStar inline
    "Pick one. Options:A:red;B:blue;C:green",                    # no spaces, ; separated
    "Pick one.\n  a: nothing here\nA:  Red\nB: BLUE\n C: green",  # case and spacing differ
    "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, at the end.\n"
    "Question: Which colour is the bar?\nChoices:\n(A) red\n(B) blue\n(C) green",  # MathVista items in MMStar
])
def test_embedded_options_are_kept_as_they_are(question):
    assert question_text(question, ["red", "blue", "green"]) == question


@pytest.mark.parametrize("question", [
    "Which is larger?",                                 # no options at all
    "Plan A. is better than plan B. Which is larger?",  # markers, but not followed by the choices
    "Which is larger?\nA. cat",                         # only the first option
    "Which is larger?\nB: dog, A: cat",                 # letters out of order
    "Which is larger? A: cow, B: dog",                  # other option texts
])
def test_questions_without_the_options_get_them_listed(question):
    assert question_text(question, ["cat", "dog"]) == f"{question}\nA. cat\nB. dog"


def test_five_options_need_all_five():
    """A question listing A–D must still get the list when there is a fifth choice (E) it lacks."""
    q = "Q?\nA. a\nB. b\nC. c\nD. d"
    assert question_text(q + "\nE. e", list("abcde")) == q + "\nE. e"
    assert question_text(q, list("abcde")) == q + "\nA. a\nB. b\nC. c\nD. d\nE. e"
    assert question_text("Q?", None) == "Q?" and question_text("Q?", []) == "Q?"
