"""In-process judge: one-forward verdict reads; the shared-prefix path equals a full forward per prompt."""

from __future__ import annotations

import pytest
from scorer_helpers import candidate_rows, tiny_recipe, untrained_judge

from srcal.scorer import judge_format
from srcal.scorer.judge import HFJudge, common_prefix_len, last_position_probs, parse_verdict_text
from srcal.scorer.score import pair_prompt, pair_schedule


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    recipe = tiny_recipe()
    return recipe, HFJudge(untrained_judge(recipe, tmp_path_factory.mktemp("judge")), batch_size=8)


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 5]]) == 2
    # identical prompts: one token is left as the suffix
    assert common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_len([[7, 1], [8, 1]]) == 0


def test_parse_verdict_text():
    assert parse_verdict_text(" A") == "A"
    assert parse_verdict_text("[[C]]") == "C"
    assert parse_verdict_text("Better: B.") == "B"
    assert parse_verdict_text("none of them") is None


def test_shared_prefix_read_equals_full_forward(judge):
    """Batch-size 8 chunks over 20 ordered pairs exercise cache expansion, padding and several chunks."""
    recipe, j = judge
    samples, rows = candidate_rows(recipe, 2, 5)
    for s in samples:
        cands = [r for r in rows if r["sample_id"] == s["id"]]
        prompts = [pair_prompt(j.meta, s, cands[a]["text"], cands[b]["text"]) for a, b in pair_schedule(5, "all")]
        assert len(prompts) == 20
        enc = [j.encode(p) for p in prompts]
        assert common_prefix_len(enc) > 4  # the question and its references are shared (no scene list in tiny)
        ours = j.read_group(prompts)
        full = last_position_probs(j.model, j.tok, prompts, j.label_ids, batch_size=64)
        single = [last_position_probs(j.model, j.tok, [p], j.label_ids)[0] for p in prompts[:3]]
        for p, q in zip(ours, full):
            assert sum(p) == pytest.approx(1.0, abs=1e-5)
            assert p == pytest.approx(q, abs=1e-4)
        for p, q in zip(ours[:3], single):  # right padding does not change a row's read
            assert p == pytest.approx(q, abs=1e-4)


def test_verdict_labels_are_single_tokens_after_the_prompt(judge):
    recipe, j = judge
    samples, rows = candidate_rows(recipe, 1, 2)
    prompt = pair_prompt(j.meta, samples[0], rows[0]["text"], rows[1]["text"])
    base = j.encode(prompt)
    for lab in judge_format.VERDICT_LABELS:
        ids = j.encode(prompt + " " + lab)
        assert ids[: len(base)] == base and ids[len(base) :] == [j.meta["label_token_ids"][lab]]
