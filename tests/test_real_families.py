"""Every training/inference stage on shrunken copies of the real releases (tests/real_models.py).

The models are random-weight, 2-layer copies of ``llava-hf/llava-1.5-7b-hf``,
``llava-hf/llama3-llava-next-8b-hf``, ``Qwen/Qwen2.5-VL-7B-Instruct`` and the judge
``Qwen/Qwen2.5-1.5B-Instruct`` with the releases' configs, processors, chat templates and real tokenizers
(srcal.models.shrunk). What is checked is what breaks on real checkpoints and not on the tiny world:
token ids, image token counts, anyres batches, processor loading without torchvision, end tokens in
the targets; and that RFT, search, align, eval, rscorer-train and score run on each architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from real_models import LLAVA15, LLAVA_NEXT, LVLM_RELEASES, QWEN25_JUDGE, QWEN25_VL, shrunk_model

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

RECIPES = {LLAVA15: "llava-1.5-7b", LLAVA_NEXT: "llava-next-8b", QWEN25_VL: "qwen2.5-vl-7b"}
FAMILY = {LLAVA15: "llava", LLAVA_NEXT: "llava_next", QWEN25_VL: "qwen2_5_vl"}
# (width, height): landscape, portrait, and a wide strip that NeXT tiles 1x3 instead of 2x2
MIXED = [(640, 480), (480, 640), (1000, 300)]
CPU = ["device=cpu", "model.dtype=float32"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _recipe(release, *overrides):
    from srcal.config import load_recipe

    return load_recipe(RECIPES[release], [*CPU, *overrides])


def _image(size, seed):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    w, h = size
    arr = (torch.rand((h // 8 + 1, w // 8 + 1, 3), generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr).resize((w, h))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Images of mixed sizes and aspect ratios, as real datasets have them."""
    d = tmp_path_factory.mktemp("real-data")
    (d / "images").mkdir()
    for i, size in enumerate([*MIXED, (336, 336)]):
        _image(size, i).save(d / "images" / f"s{i}.png")
    return d


def _sample(i: int, **kw):
    return {"id": f"s{i}", "image": f"images/s{i}.png", "question": "What colour is the largest shape?",
            "choices": ["red", "green", "blue", "yellow"], "answer": "A", **kw}


RAP = "The largest shape is a circle. It is red.\nAnswer: A"


def _end_ids(proc, model):
    from srcal.models.chat import end_token_ids

    return end_token_ids(proc, model)


def _last_target(labels, tok) -> int:
    """The last target id that is not whitespace (Qwen's turn ends '<|im_end|>\\n', LLaVA-1.5's ' ')."""
    ids = [int(i) for i in labels if int(i) != -100]
    while ids and not tok.decode([ids[-1]]).strip():
        ids.pop()
    return ids[-1]


# ------------------------------------------------------------------------------- configs and tokenizers

# Published tokenizations (see srcal.models.shrunk for where each comes from).
TOKEN_IDS = {
    LLAVA15: [("Hello world", [1, 15043, 3186]),
              ("Describe this image and its style in a very detailed manner.",
               [1, 20355, 915, 445, 1967, 322, 967, 3114, 297, 263, 1407, 13173, 8214, 29889]),
              ("tabs\tand\nnewlines", [1, 18859, 12, 392, 13, 1482, 9012])],
    LLAVA_NEXT: [("Hello world", [128000, 9906, 1917])],
    QWEN25_VL: [("What is this?", [3838, 374, 419, 30]), ("Describe this image.", [74785, 419, 2168, 13]),
                ("system\nYou are a helpful assistant.", [8948, 198, 2610, 525, 264, 10950, 17847, 13])],
    QWEN25_JUDGE: [("What is this?", [3838, 374, 419, 30])],
}
SPECIALS = {
    LLAVA15: {"<image>": 32000, "<pad>": 32001, "</s>": 2, "<s>": 1},
    LLAVA_NEXT: {"<image>": 128256, "<|eot_id|>": 128009, "<|begin_of_text|>": 128000},
    QWEN25_VL: {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<|file_sep|>": 151664},
    QWEN25_JUDGE: {"<|im_end|>": 151645, "<|file_sep|>": 151664},
}
# (tokenizer length, embedding rows) as released
SIZES = {LLAVA15: (32002, 32064), LLAVA_NEXT: (128258, 128320), QWEN25_VL: (151665, 152064),
         QWEN25_JUDGE: (151665, 151936)}


@pytest.mark.parametrize("release", [*LVLM_RELEASES, QWEN25_JUDGE])
def test_tokenizer_ids_and_vocab_sizes_are_the_releases(release):
    """Qwen2.5 has 22 added tokens (151643-151664); the Qwen3 npm tokenizer's 4 extra ones are dropped."""
    from transformers import AutoConfig, AutoTokenizer

    d = shrunk_model(release)
    tok = AutoTokenizer.from_pretrained(d)
    for text, ids in TOKEN_IDS[release]:
        assert tok(text)["input_ids"] == ids, text
    assert {t: tok.convert_tokens_to_ids(t) for t in SPECIALS[release]} == SPECIALS[release]
    assert "<think>" not in tok.get_vocab()
    cfg = AutoConfig.from_pretrained(d).get_text_config()
    assert (len(tok), cfg.vocab_size) == SIZES[release]
    assert cfg.hidden_size // cfg.num_attention_heads == 64 and cfg.num_hidden_layers == 2


PROMPTS = {
    LLAVA15: "USER: <image>\nWhat colour? ASSISTANT:",
    LLAVA_NEXT: "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat colour?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
    QWEN25_VL: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
               "<|vision_start|><|image_pad|><|vision_end|>What colour?<|im_end|>\n<|im_start|>assistant\n",
}
# image tokens for 640x480 and 480x640 (W x H), worked out in the test docstring
IMAGE_TOKENS = {LLAVA15: (576, 576), LLAVA_NEXT: (2340, 2352), QWEN25_VL: (391, 391)}


@pytest.mark.parametrize("release", LVLM_RELEASES)
def test_prompts_and_image_token_counts_are_the_releases(release, data_dir):
    """LLaVA-1.5: (336/14)^2 = 576, whatever the image. NeXT: both pick the 672x672 pinpoint (2x2 tiles +
    base = 5 tiles); the 48x48 feature grid is unpadded to the image's aspect ratio: 640x480 keeps 36 of
    48 rows -> 36*48 + 36 newlines = 1764, 480x640 keeps 36 of 48 columns -> 48*36 + 48 = 1776; plus the
    576-token base: 2340 and 2352. Qwen2.5-VL: 480x640 is resized to multiples of 28 (476x644), a 34x46
    patch grid merged 2x2 -> 17*23 = 391."""
    from srcal.models.loading import load_lvlm

    model, proc = load_lvlm(shrunk_model(release))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert prompt == PROMPTS[release]
    counts = []
    for size in MIXED[:2]:
        enc = proc(images=[_image(size, 0)], text=[prompt], return_tensors="pt")
        counts.append(int((enc["input_ids"] == model.config.image_token_id).sum()))
    assert tuple(counts) == IMAGE_TOKENS[release]


def test_qwen25_vl_processor_loads_without_torchvision(tmp_path):
    """Bug 3: AutoProcessor on the released Qwen2.5-VL layout raises 'Qwen2VLVideoProcessor requires the
    Torchvision library' here; srcal's loader assembles the image-only processor, which saves under the
    released class name (so the GPU image, which has torchvision, loads the full one)."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    from srcal.models.loading import load_processor, saved_processor_class

    d = shrunk_model(QWEN25_VL)
    if is_torchvision_available():
        pytest.skip("torchvision is installed: the released processor loads as is")
    with pytest.raises(ImportError, match="Torchvision"):
        AutoProcessor.from_pretrained(d)
    proc = load_processor(d)
    assert type(proc).__name__ == "Qwen2_5_VLProcessor" and proc.image_token_id == 151655
    enc = proc(images=[_image((640, 480), 0)], text=["<|vision_start|><|image_pad|><|vision_end|>hi"],
               return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 34, 46]]
    proc.save_pretrained(tmp_path)
    assert saved_processor_class(tmp_path) == "Qwen2_5_VLProcessor"
    assert type(load_processor(tmp_path)).__name__ == "Qwen2_5_VLProcessor"


# ---------------------------------------------------------------------------------------------- search


@pytest.mark.parametrize("release", LVLM_RELEASES)
def test_hf_search_over_mixed_aspect_ratios(release, data_dir):
    """Bug 2: NeXT tiles 640x480 and 480x640 2x2 (5 tiles with the base) and 1000x300 1x3 (4 tiles); one
    batched generate over their rows used to fail in torch.cat ('Expected size 5 but got size 4')."""
    from PIL import Image

    from srcal.search.engines.hf import HFEngine
    from srcal.models.loading import load_lvlm
    from srcal.search.beam import SearchParams, beam_search

    model, proc = load_lvlm(shrunk_model(release))
    engine = HFEngine(model, proc, delimiters=[".", "?", "!", "\n"], max_sentence_tokens=6)
    prompts = [engine.prepare(_sample(i), Image.open(data_dir / "images" / f"s{i}.png").convert("RGB"))
               for i in range(len(MIXED))]
    if release == LLAVA_NEXT:
        assert [p.vision["pixel_values"].shape[1] for p in prompts] == [5, 5, 4]
    params = SearchParams(beams=2, expansions=2, max_sentences=2, max_sentence_tokens=6, n_candidates=2)
    beams = beam_search(prompts, engine.expand, params, seed=0, context_len=engine.context_len)
    assert [len(b) for b in beams] == [2, 2, 2]
    assert all(c.sentences and all(s.token_ids for s in c.sentences) for b in beams for c in b)


def test_vllm_lora_rank_follows_the_adapter(tmp_path):
    """vLLM accepts max_lora_rank in (1, 8, 16, 32, 64, 128, 256, 320, 512): r=4 → 8 with floor 1; the real
    recipes' align adapters (r=256) raise the default floor 64 to 256; r=600 cannot be served."""
    from srcal.search.engines.vllm import vllm_lora_rank

    for r, floor, want in ((4, 1, 8), (32, 64, 64), (256, 64, 256), (300, 1, 320)):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": r}))
        assert vllm_lora_rank(tmp_path, floor) == want
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 600}))
    with pytest.raises(ValueError, match="search.engine=hf"):
        vllm_lora_rank(tmp_path, 64)


@pytest.mark.vllm
# NeXT's anyres prompts (1,200-2,400 tokens per image here) make vLLM-CPU's start and prefill minutes long
@pytest.mark.parametrize("release", [LLAVA15, pytest.param(LLAVA_NEXT, marks=pytest.mark.slow), QWEN25_VL])
def test_vllm_search_on_the_real_architecture_with_its_rft_adapter(release, data_dir, tmp_path, monkeypatch,
                                                                     vllm_multimodal_python):
    """The search stage with ``search.engine=vllm`` (the real recipes' default) on the shrunken LLaVA-1.5
    and a LoRA RFT adapter, mixed image sizes. transformers saves the CLIP tower under names vLLM 0.32
    cannot load, so the engine serves a renamed copy (``prepare_model_for_vllm``) — without it the worker
    fails at load. Needs the multimodal vLLM environment (vLLM's LLaVA imports torchvision):
    ``bash scripts/install_vllm_cpu.sh --multimodal``, which the dev install (and so CI) builds; docs/vllm.md.
    ``SRCAL_REQUIRE_VLLM_MM=1`` (set by .ci/run) turns its absence into a failure."""
    from srcal.search.stage import run_search

    monkeypatch.setenv("SRCAL_VLLM_PYTHON", str(vllm_multimodal_python))
    _rft(release, data_dir, tmp_path / "rft", monkeypatch)
    rows = [_sample(i, source="aokvqa", category="perception") for i in range(len(MIXED))]
    (data_dir / "calib.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = _recipe(release, "search.engine=vllm", "search.beams=2", "search.expansions=2",
                     "search.n_candidates=2", "search.max_sentences=2", "search.max_sentence_tokens=6",
                     "search.vllm_max_model_len=4096", "search.vllm_max_lora_rank=1", "search.batch_size=3")
    out = tmp_path / "search"
    summary = run_search(recipe, {"policy": tmp_path / "rft", "base": shrunk_model(release), "data": data_dir},
                         out, split="calib")
    rows = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()]
    assert summary["counts"]["rejected"] == 0, (out / "rejected.jsonl").read_text()
    assert sorted({r["sample_id"] for r in rows}) == ["s0", "s1", "s2"]
    assert all(r["text"] for r in rows)
    if release == LLAVA15:  # the CLIP tower renamed for vLLM (NeXT's and Qwen's names load as saved)
        assert (shrunk_model(release).with_name(shrunk_model(release).name + "-vllm") / ".srcal-vllm-converted").exists()


# ------------------------------------------------------------------------------------ rft, align, eval


def _spy(monkeypatch, name):
    """Record the TRL trainer that a stage builds and the batches it trains on (``trainer.batches``)."""
    import trl

    seen = []
    base = getattr(trl, name)

    class Spy(base):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.batches, collate = [], self.data_collator

            def record(examples):
                batch = collate(examples)
                self.batches.append(batch)
                return batch

            self.data_collator = record
            seen.append(self)

    monkeypatch.setattr(trl, name, Spy)
    return seen


def _rft(release, data_dir, out, monkeypatch):
    from srcal.models.loading import new_model_artifact
    from srcal.rft.sft import _sft_rows, train_sft

    recipe = _recipe(release, "rft.batch_size=1", "rft.grad_accum=1", "rft.lr=1e-2", "rft.save_steps=0",
                     "rft.warmup_ratio=0", "rft.logging_steps=1")
    raps = [{**_sample(3), "id": f"r{k}", "rap": RAP} for k in range(2)]  # 336x336: NeXT's fewest tokens
    rows, bad = _sft_rows(raps, data_dir)
    assert not bad
    seen = _spy(monkeypatch, "SFTTrainer")
    stats = train_sft(recipe, shrunk_model(release), rows, out)
    new_model_artifact(out, None, "rft", family=FAMILY[release])
    return stats, seen[0]


# NeXT's anyres prompts are ~1,200-2,400 tokens against a 128K vocabulary: its RFT/align/eval alone took
# about as long as the other two families together, so it is kept out of the default suite (its anyres
# batching is in CI through the search test, and tests/test_e2e_real.py runs every NeXT stage in CI).
@pytest.mark.parametrize("release", [LLAVA15, pytest.param(LLAVA_NEXT, marks=pytest.mark.slow), QWEN25_VL])
def test_rft_align_eval_on_the_real_architecture(release, data_dir, tmp_path, monkeypatch):
    """RFT: 2 LoRA SFT steps change the adapter (LoRA B starts at 0) and the targets end with the model's
    end token — bug 4: LLaVA-1.5's template renders 'ASSISTANT: text ' without '</s>', so '</s>' is
    appended; the trained prompts start with the BOS that inference adds (TRL tokenizes without special
    tokens and the llava-hf templates write none). Align: one DPO step on the RFT policy, its chosen/rejected end the same way. Eval: the
    aligned artifact generates for a batch of mixed image sizes."""
    from PIL import Image
    from safetensors.torch import load_file

    from srcal.align import run_align
    from srcal.evaluate import evaluate_model
    from srcal.models.loading import load_model_any

    base = shrunk_model(release)
    stats, trainer = _rft(release, data_dir, tmp_path / "rft", monkeypatch)
    assert stats["steps"] == 2
    lora_b = {k: v for k, v in load_file(tmp_path / "rft" / "adapter_model.safetensors").items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())
    tok = trainer.processing_class.tokenizer
    batch = trainer.batches[0]
    ends = _end_ids(trainer.processing_class, trainer.model)
    assert _last_target(batch["labels"][0], tok) in ends
    if release == LLAVA15:
        assert _last_target(batch["labels"][0], tok) == 2  # '</s>'
    # trained on the prompt that search/eval encode: with the BOS (LLaVA) or none (Qwen has no BOS)
    assert batch["input_ids"][0][0] == (tok.bos_token_id if tok.bos_token_id is not None else 151644)

    # align: one DPO step (1 pair, batch 1) on the RFT policy
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "pairs.jsonl").write_text(json.dumps({
        **_sample(3), "chosen": RAP, "rejected": "The largest shape is a square.\nAnswer: B"}) + "\n")
    recipe = _recipe(release, "curate.min_pairs=1", "align.batch_size=1", "align.grad_accum=1",
                     "align.lr=1e-3", "align.lora.r=4", "align.lora.alpha=8", "align.save_steps=0")
    seen = _spy(monkeypatch, "DPOTrainer")
    summary = run_align(recipe, {"pairs": pairs, "policy": tmp_path / "rft", "base": base, "data": data_dir},
                        tmp_path / "align", round="round1")
    assert summary["train"]["steps"] == 1 and summary["train"]["loss_finite"]
    dpo = seen[0]
    batch = dpo.batches[0]  # rows [chosen, rejected]
    dpo_tok = dpo.processing_class.tokenizer
    for ids, mask, attn in zip(batch["input_ids"], batch["completion_mask"], batch["attention_mask"]):
        assert _last_target(ids[mask.bool()], dpo_tok) in ends
        # DPO also trains on the prompt inference encodes: LLaVA's BOS first (after any left padding)
        assert ids[attn.bool()][0] == (dpo_tok.bos_token_id if dpo_tok.bos_token_id is not None else 151644)

    # eval: the aligned artifact (RFT merged + DPO adapter) on a batch of mixed sizes
    model, proc = load_model_any(tmp_path / "align", base, dtype="float32", device="cpu")
    samples = [_sample(i) for i in range(len(MIXED))]
    images = [Image.open(data_dir / s["image"]).convert("RGB") for s in samples]
    rows = evaluate_model(model, proc, samples, images, batch_size=3, max_new_tokens=4)
    assert [r["id"] for r in rows] == ["s0", "s1", "s2"]


# ------------------------------------------------------------------------------------------- the judge


def test_judge_trains_and_scores_on_qwen25(tmp_path):
    """rscorer-train (TRL SFT, 2 steps) on the shrunken Qwen2.5-1.5B-Instruct with its real tokenizer, then
    score: every ordered candidate pair gets a verdict distribution."""
    from scorer_helpers import candidate_rows, tiny_recipe, write_jsonl

    from srcal.scorer.data import run_rscorer_data
    from srcal.scorer.score import run_score
    from srcal.scorer.train import run_rscorer_train

    judge_base = shrunk_model(QWEN25_JUDGE)
    recipe = tiny_recipe(f"rscorer.base={judge_base}", "rscorer.trainer=trl", "rscorer.steps=2",
                         "rscorer.batch_size=2", "rscorer.lr=1e-3", "rscorer.n_train_pairs=8",
                         "rscorer.n_heldout_pairs=4", "rscorer.serve=hf", "score.batch_size=8")
    pairs = tmp_path / "rdata"
    run_rscorer_data(recipe, {}, pairs)
    judge = tmp_path / "judge"
    summary = run_rscorer_train(recipe, {"rscorer_data": pairs}, judge)
    assert summary["counts"]["params_changed"] > 0
    meta = json.loads((judge / "srcal_judge.json").read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(judge)
    assert len(tok) == 151665 and meta["label_token_ids"] == {k: tok(" " + k)["input_ids"][0] for k in "ABC"}

    samples, cands = candidate_rows(recipe, 2, 3)
    write_jsonl(tmp_path / "data" / "calib.jsonl", samples)
    write_jsonl(tmp_path / "cands" / "candidates.jsonl", cands)
    out = tmp_path / "score"
    res = run_score(recipe, {"candidates": tmp_path / "cands", "judge": judge, "data": tmp_path / "data"}, out)
    assert res["counts"]["judged_now"] == res["counts"]["scheduled_pairs"] == 12 and res["counts"]["missing"] == 0
    rows = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert all(abs(r["p_A"] + r["p_B"] + r["p_C"] - 1) < 1e-4 for r in rows)


def test_every_release_is_built_from_its_embedded_files():
    """The build writes what a hub download has: config, generation config, tokenizer, template, processor."""
    for release in (*LVLM_RELEASES, QWEN25_JUDGE):
        d = Path(shrunk_model(release))
        names = {p.name for p in d.iterdir()}
        assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "model.safetensors"} <= names, release
        if release != QWEN25_JUDGE:
            assert "chat_template.jinja" in names and "preprocessor_config.json" in names
