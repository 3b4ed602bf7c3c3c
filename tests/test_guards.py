"""Length and memory guards: a runaway row is rejected, with its reason, before it is tokenized."""

from __future__ import annotations

import json
import shutil

import pytest

from srcal.data.schema import (
    context_length,
    prompt_chars,
    prompt_chars_problem,
    prompt_tokens_problem,
    read_jsonl,
)

GOOD = {"id": "s1", "image": "images/a.png", "question": "How many circles?", "answer": "2",
        "category": "math", "source": "t"}


def test_prompt_chars_counts_question_and_choices():
    """17 + 3 + 4 = 24 characters: the question and every choice are shown to the model."""
    row = {**GOOD, "choices": ["one", "four"]}
    assert prompt_chars(row) == 24
    assert prompt_chars_problem(row, 24) is None and prompt_chars_problem(row, 0) is None
    assert prompt_chars_problem(row, 23) == "prompt of 24 characters > data.max_prompt_chars=23"


def test_sample_reader_rejects_a_long_row_with_file_line_and_reason(tmp_path):
    p = tmp_path / "eval.jsonl"
    rows = [GOOD, {**GOOD, "id": "huge", "question": "x" * 1_000_000}, {**GOOD, "id": "s3"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept, rejected = read_jsonl(p, max_rejected_share=0.5, max_prompt_chars=16000)
    assert [r["id"] for r in kept] == ["s1", "s3"]
    assert [(r["line"], r["id"], r["field"]) for r in rejected] == [(2, "huge", "question")]
    assert "prompt of 1000000 characters > data.max_prompt_chars=16000" in rejected[0]["reason"]
    assert len(read_jsonl(p, max_rejected_share=0.5)[0]) == 3  # 0 (the default here) = no character limit


def test_context_length_from_real_configs_and_tokenizer():
    """min(tokenizer.model_max_length, text_config.max_position_embeddings); HF's ~1e30 means unset."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlavaConfig, PreTrainedTokenizerFast

    llava = LlavaConfig(text_config=LlamaConfig(max_position_embeddings=512).to_dict())
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    assert tok.model_max_length > 10**7  # "not set"
    assert context_length(llava, tok) == 512
    tok.model_max_length = 300
    assert context_length(llava, tok) == 300
    assert context_length(LlamaConfig(max_position_embeddings=2048), None) == 2048
    assert context_length(None, None) is None
    assert prompt_tokens_problem(400, 512, reserve=112) is None
    assert prompt_tokens_problem(401, 512, reserve=112) == ("prompt of 401 tokens + 112 reserved > the model's "
                                                            "context of 512 tokens")
    assert prompt_tokens_problem(10**6, None) is None


def test_align_sets_aside_long_pairs():
    from srcal.align import fit_pairs

    pairs = [{"id": "a", "question": "q" * 10, "chosen": "x", "rejected": "y"},
             {"id": "b", "question": "q" * 11, "choices": None}]
    kept, too_long = fit_pairs(pairs, 10)
    assert [p["id"] for p in kept] == ["a"]
    assert too_long == [{"id": "b", "reason": "prompt of 11 characters > data.max_prompt_chars=10"}]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The tiny world (12 eval, 4 calib rows) plus a copy whose eval and calib splits hold two hostile rows:
    a 1 MB question (refused by data.max_prompt_chars before any tokenizer) and a 12,000-character one that
    is within the character limit but encodes to more than the tiny model's 1,024-token context."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from srcal.run import store
    from srcal.config import load_recipe
    from srcal.rft.base import build_tiny_from_recipe
    from srcal.stages import execute

    tmp_path = tmp_path_factory.mktemp("hostile")
    sets = ["model.tiny.vision_hidden=32", "model.tiny.text_hidden=64", "model.tiny.text_heads=1",
            "model.tiny.vocab_size=400", "model.tiny.corpus_samples=100", "data.rft_size=4", "data.calib_size=4",
            "data.eval_size=12", "data.base_train_size=0", "eval.max_new_tokens=4", "eval.batch_size=6",
            "data.max_rejected_share=0.4", "search.beams=2", "search.n_candidates=2", "search.max_sentences=2",
            "search.max_sentence_tokens=4", "rounds=1"]
    recipe = load_recipe("tiny", sets)
    execute("data", recipe, {}, str(tmp_path / "data"))
    base = build_tiny_from_recipe(recipe, tmp_path / "base")
    store.publish(base, str(tmp_path / "base_pub"), marker={"stage": "base"})

    out = tmp_path / "hostile"
    shutil.copytree(tmp_path / "data", out, ignore=shutil.ignore_patterns("_SRCAL_COMPLETE.json"))
    for split in ("eval", "calib"):
        rows = [json.loads(x) for x in (out / f"{split}.jsonl").read_text().splitlines()]
        rows.insert(3, {**rows[0], "id": "huge", "question": "How many " + "very " * 200_000 + "red circles?"})
        rows.insert(1, {**rows[1], "id": "long", "question": "Is the " + "dark " * 2400 + "square red?"})
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.publish(out, str(tmp_path / "hostile_pub"), marker={"stage": "data"})
    return recipe, tmp_path


def test_eval_rejects_long_rows_before_building_tensors(hostile):
    """`eval` on the tiny LLaVA with the two hostile rows among twelve: the 1 MB row is refused by its
    characters, the 12,000-character one by its tokens (one row at a time)."""
    from srcal.stages import execute

    recipe, tmp_path = hostile
    summary = execute("eval", recipe, {"model": str(tmp_path / "base_pub"), "data": str(tmp_path / "hostile_pub")},
                      str(tmp_path / "ev"))
    assert summary["counts"]["evaluated"] == 12
    assert summary["counts"]["rejected"] == summary["counts"]["prompt_too_long"] == 2
    rejected = {r["id"]: r for r in (json.loads(x) for x in (tmp_path / "ev" / "rejected.jsonl").read_text().splitlines())}
    assert rejected["huge"]["line"] == 5 and "data.max_prompt_chars=16000" in rejected["huge"]["reason"]
    assert "the model's context of 1024 tokens" in rejected["long"]["reason"]
    assert len((tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()) == 12


def test_search_quarantines_the_rows_it_refuses_and_merge_keeps_them(hostile):
    """Search over 2 shards of the hostile calib split: the 1 MB row is refused before any tokenizer and is in
    the merged artifact's rejected.jsonl with its line and reason, once (both shards read the whole split);
    the 4 good rows and the long-but-legal one get candidates or a per-sample rejection."""
    from srcal.stages import execute

    recipe, tmp_path = hostile
    inputs = {"base": str(tmp_path / "base_pub"), "data": str(tmp_path / "hostile_pub")}
    shards = {f"shard{i}": str(tmp_path / f"s{i}") for i in range(2)}
    for i, uri in enumerate(shards.values()):
        summary = execute("search", recipe, inputs, uri, shard=f"{i}/2", split="calib", round="round1")
        assert summary["counts"]["malformed_rows"] == 1
    merged = execute("search-merge", recipe, {**shards, "data": inputs["data"]}, str(tmp_path / "merged"))
    rejected = [json.loads(x) for x in (tmp_path / "merged" / "rejected.jsonl").read_text().splitlines()]
    huge = [r for r in rejected if r.get("id") == "huge"]
    assert len(huge) == 1 and huge[0]["line"] == 5 and "data.max_prompt_chars=16000" in huge[0]["reason"]
    cands = {json.loads(x)["sample_id"] for x in (tmp_path / "merged" / "candidates.jsonl").read_text().splitlines()}
    assert "huge" not in cands and merged["counts"]["samples"] + len(rejected) >= 5


def test_a_decompression_bomb_image_is_rejected_not_decoded(tmp_path):
    """A 14,000 × 14,000 PNG (196 M pixels, a few hundred KB on disk) is past Pillow's bomb limit (2 ×
    ``Image.MAX_IMAGE_PIXELS`` ≈ 179 M): the header check refuses it; nothing allocates 588 MB of RGB."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("1", (14_000, 14_000)).save(tmp_path / "images" / "bomb.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a.png")
    p = tmp_path / "eval.jsonl"
    p.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "bomb", "image": "images/bomb.png"}) + "\n")
    rows, rejected = read_jsonl(p, images_root=tmp_path, max_rejected_share=0.5)
    assert [r["id"] for r in rows] == ["s1"]
    assert rejected[0]["id"] == "bomb" and "DecompressionBombError" in rejected[0]["reason"]
