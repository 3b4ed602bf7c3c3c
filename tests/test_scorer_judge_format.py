"""The judge's input format (srcal.scorer.judge_format): fact language, prompts, the closed vocabulary."""

from __future__ import annotations

import random

import pytest

from srcal.config import load_recipe
from srcal.world import oracle, teacher
from srcal.scorer import judge_format
from srcal.scorer.data import judge_samples


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("tiny")


def test_claims_become_subject_value_words():
    grid = 3
    text = ("There is a red circle in the top left. The center cell is empty. I count 2 circles. "
            "The blue bar is 7. 3 plus 4 is 8. So the answer is 2.\nAnswer: 2")
    canon = judge_format.canonical_response(text, grid)
    assert canon.words == ["topleft", "redcircle", "center", "none", "countanycircle", "two", "barblue", "seven",
                           "three", "plus", "four", "is", "eight", "so", "two", "answer", "two"]
    # each claim's target sits on its last word; the answer word is the last one
    owners = {i: o for i, o in enumerate(canon.claim_of_word) if o >= 0}
    assert owners == {1: 0, 3: 1, 5: 2, 7: 3, 12: 4}
    assert canon.answer_word == len(canon.words) - 1
    # with reference support, each scene claim is followed by the description's value for its subject
    ref = judge_format.canonical_response(text, grid, reference={"topleft": "bluecircle", "countanycircle": "two"})
    assert ref.words[:9] == ["topleft", "redcircle", "bluecircle", "center", "none", "unk",
                             "countanycircle", "two", "two"]
    assert {i: o for i, o in enumerate(ref.claim_of_word) if o >= 0}[2] == 0


def test_unparseable_text_never_raises():
    canon = judge_format.canonical_response("blah blah ??? no answer here", 3)
    assert canon.words[-2:] == ["answer", "none"]
    assert judge_format.OTHER in canon.words
    assert judge_format.canonical_response("", 3).words == ["answer", "none"]


def test_true_claims_appear_verbatim_in_the_description(recipe):
    """The point of the format: a scene claim is true iff its (subject, value) is a description fact, and
    with reference support iff its value equals the reference value that follows it."""
    rng = random.Random(0)
    checked = 0
    for s in judge_samples(recipe, 60, "fmt-test"):
        facts = judge_format.description_facts(s["scene"])
        ref = dict(facts)
        grid = judge_format.sample_grid(s)
        for kind in ("teacher", *teacher.CORRUPTIONS):
            text = teacher.teacher_rap(s, rng) if kind == "teacher" else teacher.corrupt_rap(
                s, teacher.teacher_rap(s, rng), kind, rng)
            for claim in oracle.assess(s, text).claims:
                fact = judge_format.claim_fact(claim, grid)
                if fact is None:
                    continue  # scene-independent arithmetic: checked compositionally
                assert (fact in facts) == claim.true, (claim, fact)
                words = judge_format.claim_words(claim, grid, ref)
                assert (words[1] == words[2]) == claim.true
                checked += 1
    assert checked > 200


def test_every_produced_word_is_in_the_vocabulary(recipe):
    sh = recipe.data.shapes
    vocab = set(judge_format.fact_vocabulary(sh.colors, sh.shapes, sh.grid, sh.max_value, sh.max_objects))
    rng = random.Random(1)
    for s in judge_samples(recipe, 80, "fmt-vocab"):
        rap = teacher.teacher_rap(s, rng)
        texts = [rap] + [teacher.corrupt_rap(s, rap, k, rng) for k in teacher.CORRUPTIONS]
        ji = [judge_format.judge_input(s, t, texts[0], "facts") for t in texts]
        words = {w for j in ji for f in (j.description, j.question, j.response_a) for w in f.split()}
        assert words <= vocab, words - vocab


def test_prompt_puts_the_shared_part_first_and_checks_fields(recipe):
    s = judge_samples(recipe, 1, "fmt-prompt")[0]
    ji = judge_format.judge_input(s, "The answer is red.\nAnswer: red", "Answer: blue", "facts")
    template = "Scene:{description}\n" + recipe.rscorer.prompt_template  # the tiny recipe's leaves the scene out
    prompt, spans = judge_format.field_spans(template, ji)
    assert prompt == judge_format.render_prompt(template, ji)
    assert spans["description"][1] <= spans["question"][0] <= spans["response_a"][0] < spans["response_b"][0]
    assert prompt[slice(*spans["response_b"])] == ji.response_b
    assert prompt.endswith("Verdict:")
    with pytest.raises(ValueError, match="response_b"):
        judge_format.render_prompt("{description} {question} {response_a}", ji)


def test_text_format_passes_fields_verbatim():
    s = {"id": "x", "question": "What is shown?", "description": "A cat on a mat."}
    ji = judge_format.judge_input(s, " It is a cat.\nAnswer: cat ", "Answer: dog", "text")
    assert (ji.description, ji.question, ji.response_a) == ("A cat on a mat.", "What is shown?",
                                                             "It is a cat.\nAnswer: cat")
    with pytest.raises(ValueError, match="input_format 'text'"):
        judge_format.judge_input(s, "a", "b", "facts")


def test_pair_diff_shows_only_the_claims_that_differ():
    """Two candidates share two of three claims: the diff view keeps each side's own claim, the conclusion
    and the answer line, and says which claim indices it dropped (a claim's words go or stay together)."""
    ref = {"topleft": "redcircle", "center": "none", "countanycircle": "one"}
    a = judge_format.canonical_response(
        "There is a red circle in the top left. The center cell is empty. I count 1 circles. "
        "So the answer is 1.\nAnswer: 1", 3, reference=ref)
    b = judge_format.canonical_response(
        "There is a red circle in the top left. I count 2 circles. The center cell is empty. "
        "So the answer is 2.\nAnswer: 2", 3, reference=ref)
    da, db, drop_a, drop_b = judge_format.pair_diff(a, b)
    assert da.words == ["countanycircle", "one", "one", "so", "one", "answer", "one"]
    assert db.words == ["countanycircle", "two", "one", "so", "two", "answer", "two"]
    assert (drop_a, drop_b) == ({0, 1}, {0, 2})
    # per-claim targets still point at the claim each word came from, and the answer word is re-indexed
    assert {i: o for i, o in enumerate(db.claim_of_word) if o >= 0} == {2: 1}
    assert db.words[db.answer_word] == "two" and db.answer_word == len(db.words) - 1
    # identical responses: nothing but the conclusion and answer is left on either side
    same, _, dropped, _ = judge_format.pair_diff(a, a)
    assert same.words == ["so", "one", "answer", "one"] and dropped == {0, 1, 2}


def test_question_reference_retrieves_the_subjects_entries():
    """Each question type gets the description's entries on its subject, computed by hand from the scene."""
    objs = [{"row": 0, "col": 0, "color": "red", "shape": "circle"},
            {"row": 2, "col": 2, "color": "green", "shape": "triangle"}]
    vocab = {"colors": ["red", "green"], "shapes": ["circle", "square", "triangle"]}

    def ref(query):
        scene = {"kind": "objects", "grid": 3, "objects": objs, "vocab": vocab, "query": query}
        return judge_format.question_reference(scene, 3)

    assert ref({"type": "shape_at", "row": 2, "col": 2}) == ["greentriangle"]
    assert ref({"type": "color_at", "row": 1, "col": 1}) == ["none"]
    assert ref({"type": "exists", "color": "red", "shape": "square"}) == ["zero"]
    assert ref({"type": "where", "color": "green", "shape": "triangle"}) == ["bottomright"]
    assert ref({"type": "where", "color": "red", "shape": "square"}) == ["none"]
    assert ref({"type": "count_sum", "s1": "circle", "s2": "triangle"}) == ["one", "one"]
    bars = {"kind": "bars", "bars": [{"color": "red", "value": 3}, {"color": "blue", "value": 7}],
            "query": {"type": "tallest"}}
    assert judge_format.question_reference(bars, 3) == ["blue"]
