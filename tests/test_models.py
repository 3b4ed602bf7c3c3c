"""srcal.models: the tiny offline models (tiny.py) and the loading / LoRA / model-artifact helpers (loading.py)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 threads spin-wait badly when the 2 cores are shared


def _world_text(n: int = 400) -> list[str]:
    """Shapes-world text: the tokenizer's training corpus and the text the round-trip test checks."""
    from srcal.config import ShapesWorldConfig
    from srcal.world.corpus import corpus

    return corpus(ShapesWorldConfig(), n, seed=0)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """One tokenizer per model (the builders set their family's chat template on it), all from one corpus."""
    from srcal.models import tiny

    root = tmp_path_factory.mktemp("tiny")
    corpus = _world_text()
    toks = {k: tiny.train_tokenizer(corpus, 500) for k in ("llava", "qwen2_vl", "qwen2")}
    dirs = {
        "llava": tiny.build_llava(toks["llava"], root / "llava", image_size=48, patch_size=8,
                                  vision_hidden=32, text_hidden=64, text_heads=1),
        "qwen2_vl": tiny.build_qwen2_vl(toks["qwen2_vl"], root / "qwen2_vl", image_size=56,
                                        vision_hidden=32, text_hidden=64, text_heads=1),
        "qwen2": tiny.build_qwen2_text(toks["qwen2"], root / "qwen2", hidden=64, layers=2, heads=1),
    }
    return dirs, toks, corpus


def test_autotokenizer_ids_match_training_tokenizer_on_world_text(tiny_dirs):
    """AutoTokenizer builds Qwen2Tokenizer for qwen2 folders and re-creates its
    pre-tokenizer; our tokenizer is trained with that pre-tokenizer, so ids must agree everywhere."""
    from transformers import AutoTokenizer

    dirs, toks, corpus = tiny_dirs
    texts = corpus[:200] + ["12 + 7 = 19. The bar for B is 3.5 high.\nAnswer: 19", "  two  spaces\n\nend"]
    for name, d in dirs.items():
        auto = AutoTokenizer.from_pretrained(d)
        for t in texts:
            assert auto(t)["input_ids"] == toks[name](t)["input_ids"], (name, t)
        assert auto.eos_token == "<|im_end|>" and auto.pad_token == "<pad>"
        assert auto.decode(auto(texts[0])["input_ids"]) == texts[0]


def test_tokenizer_compresses_world_text(tiny_dirs):
    """A BPE trained on the world's text must merge its words (else sequences get long and training slow)."""
    _, toks, corpus = tiny_dirs
    tok = toks["llava"]
    n_chars = sum(len(t) for t in corpus[:100])
    n_ids = sum(len(tok(t)["input_ids"]) for t in corpus[:100])
    assert n_chars / n_ids > 2.5


def test_llava_reloads_with_auto_classes_and_generates(tiny_dirs):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dirs, _, _ = tiny_dirs
    model = AutoModelForImageTextToText.from_pretrained(dirs["llava"])
    proc = AutoProcessor.from_pretrained(dirs["llava"])
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(proc).__name__ == "LlavaProcessor"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    enc = proc(images=[Image.new("RGB", (48, 48), (200, 0, 0))], text=[prompt], return_tensors="pt")
    # 48/8 = 6 patches per side -> 36 image tokens (CLS dropped by the "default" strategy)
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 36
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4 or int(out[0, -1]) == proc.tokenizer.eos_token_id


def test_qwen2_vl_reloads_with_image_only_processor_and_generates(tiny_dirs):
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from srcal.models.tiny import load_tiny_processor

    dirs, _, _ = tiny_dirs
    model = AutoModelForImageTextToText.from_pretrained(dirs["qwen2_vl"])
    proc = load_tiny_processor(dirs["qwen2_vl"])
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(proc).__name__ == "Qwen2VLImageOnlyProcessor"
    assert proc.image_token == "<|image_pad|>"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    enc = proc(images=[Image.new("RGB", (48, 48), (0, 0, 200))], text=[prompt], return_tensors="pt")
    # 56x56 -> 4x4 patches of 14 -> 2x2 after the 2x2 merge = 4 image tokens
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 4
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1


def test_qwen2_text_reloads_and_text_models_have_vllm_head_dim(tiny_dirs):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dirs, _, _ = tiny_dirs
    model = AutoModelForCausalLM.from_pretrained(dirs["qwen2"])
    tok = AutoTokenizer.from_pretrained(dirs["qwen2"])
    assert model.config.tie_word_embeddings
    logits = model(**tok(["Answer: 3"], return_tensors="pt")).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()
    for name in ("llava", "qwen2_vl"):
        tc = AutoConfig.from_pretrained(dirs[name]).text_config
        assert tc.hidden_size // tc.num_attention_heads == 64, name


def test_tiny_lvlm_rejects_unknown_family_and_bad_sizes(tmp_path):
    from srcal.models import tiny

    with pytest.raises(ValueError, match="llava_next"):
        tiny.build_tiny_lvlm("llava_next", ["a b c"], tmp_path, image_size=48, vocab_size=300)
    tok = tiny.train_tokenizer(["a b c"] * 10, 300)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tiny.build_llava(tok, tmp_path / "x", image_size=50, patch_size=8)
    assert json.dumps(tiny.SPECIAL_TOKENS)  # the specials are plain strings (saved into tokenizer.json)


# ------------------------------------------------------------------------------------------ loading.py


def _random_adapter(model, out_dir, seed):
    """Attach a LoRA with non-zero random B (init_lora_weights=False), save it, return the merged model."""
    from peft import get_peft_model

    from srcal.config import LoraConfig
    from srcal.models.loading import lora_config

    torch.manual_seed(seed)
    cfg = lora_config(LoraConfig(r=4, alpha=8))
    cfg.init_lora_weights = False
    pm = get_peft_model(model, cfg)
    pm.save_pretrained(out_dir)
    return pm.merge_and_unload()


def _logits(model, proc):
    from PIL import Image

    from srcal.models.loading import plain_question_messages

    prompt = proc.apply_chat_template(plain_question_messages("What is red?"), add_generation_prompt=True)
    enc = proc(images=[Image.new("RGB", (48, 48), (9, 99, 199))], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_lora_config_stays_in_language_model(tiny_dirs):
    from peft import get_peft_model

    from srcal.config import LoraConfig
    from srcal.models.loading import load_lvlm, lora_config

    dirs, _, _ = tiny_dirs
    for fam in ("llava", "qwen2_vl"):
        model, _ = load_lvlm(dirs[fam])
        pm = get_peft_model(model, lora_config(LoraConfig(r=2, alpha=4)))
        names = [n for n, p in pm.named_parameters() if p.requires_grad]
        assert names and all("language_model" in n and "lora_" in n for n in names), fam
        assert any("mlp.down_proj" in n for n in names) and any("self_attn.q_proj" in n for n in names)
    with pytest.raises(ValueError, match="inside the language model"):
        lora_config(LoraConfig(target_modules=r".*(q_proj|v_proj)"))
    with pytest.raises(ValueError, match="not a valid regex"):
        lora_config(LoraConfig(target_modules="(("))


def test_model_artifact_stack_merges_in_order(tiny_dirs, tmp_path):
    """rft adapter A on base; round1 adapter B trained on base+A. load_policy(base, round1) must equal
    base+A+B merged by hand, and its stack must hold A as 00-rft."""
    from srcal.models.loading import load_lvlm, load_policy, new_model_artifact, read_meta

    dirs, _, _ = tiny_dirs
    base = dirs["llava"]
    rft, r1 = tmp_path / "rft", tmp_path / "round1"
    assert new_model_artifact(rft, None, "rft", family="llava") == {"family": "llava", "stack": [], "name": "rft"}
    m, proc = load_lvlm(base)
    merged_a = _random_adapter(m, rft, seed=1)
    meta = new_model_artifact(r1, rft, "round1")
    assert meta == {"family": "llava", "stack": ["00-rft"], "name": "round1"} == read_meta(r1)
    assert (r1 / "stack" / "00-rft" / "adapter_model.safetensors").exists()
    merged_ab = _random_adapter(merged_a, r1, seed=2)
    expect = _logits(merged_ab, proc)

    got_model, got_proc = load_policy(base, r1)
    assert torch.allclose(_logits(got_model, got_proc), expect, atol=1e-5)
    base_model, _ = load_policy(base, None)
    assert not torch.allclose(_logits(base_model, proc), expect, atol=1e-3)
    # round2 from round1: stack = [00-rft, 01-round1]
    assert new_model_artifact(tmp_path / "round2", r1, "round2")["stack"] == ["00-rft", "01-round1"]


def test_base_pointer_and_plain_question(tmp_path):
    from srcal.models.loading import plain_question_messages, question_text, resolve_base, write_base_pointer

    write_base_pointer(tmp_path / "b", "llava-hf/llava-1.5-7b-hf", "llava")
    assert resolve_base(tmp_path / "b") == "llava-hf/llava-1.5-7b-hf"
    assert resolve_base(tmp_path) == str(tmp_path)
    msgs = plain_question_messages("Which is larger?", ["cat", "dog"])
    assert msgs[0]["content"][0] == {"type": "image"}
    text = msgs[0]["content"][1]["text"]
    assert text == "Which is larger?\nA. cat\nB. dog"
    assert "answer" not in text.lower() and "reason" not in text.lower()
    assert question_text("Pick one. A. x B. y", ["x", "y"]) == "Pick one. A. x B. y"


# ------------------------------------------------------------------------------------------------ chat.py


def test_turn_end_text_appends_eos_only_where_the_template_has_no_end_token(tiny_dirs):
    """ChatML closes the assistant turn with <|im_end|> (= eos): nothing to add. A Vicuna-style template
    ('ASSISTANT: text ', as llava-hf's LLaVA-1.5) has no end token after the text: eos is appended, once."""
    from srcal.models.chat import end_assistant_turns, turn_end_text
    from srcal.models.shrunk import LLAVA15_CHAT_TEMPLATE

    _, toks, _ = tiny_dirs
    tok = toks["llava"]
    rows = [{"prompt": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
             "completion": [{"role": "assistant", "content": [{"type": "text", "text": "It is red.\nAnswer: A"}]}]}]
    assert turn_end_text(tok) == "" and end_assistant_turns(rows, tok) is rows
    saved = tok.chat_template
    try:
        tok.chat_template = LLAVA15_CHAT_TEMPLATE
        assert turn_end_text(tok) == tok.eos_token == "<|im_end|>"
        # an id given as the model's end token counts too: the template's trailing ' ' is not one
        assert turn_end_text(tok, end_ids=[tok.convert_tokens_to_ids("<pad>")]) == "<|im_end|>"
        once = end_assistant_turns(rows, tok)
        assert once[0]["completion"][0]["content"][0]["text"] == "It is red.\nAnswer: A<|im_end|>"
        assert rows[0]["completion"][0]["content"][0]["text"] == "It is red.\nAnswer: A"  # input untouched
        assert end_assistant_turns(once, tok)[0]["completion"] == once[0]["completion"]  # idempotent
        pref = [{"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}]
        out = end_assistant_turns(pref, tok)[0]
        assert (out["chosen"][0]["content"], out["rejected"][0]["content"]) == ("a<|im_end|>", "b<|im_end|>")
    finally:
        tok.chat_template = saved


def test_vision_batch_pads_anyres_tiles_and_concatenates_flat_patches():
    """NeXT pixel_values (1, tiles, 3, H, W) with 5 and 4 tiles -> (2, 5, 3, H, W), the 4-tile row's last
    tile zero; Qwen-style flat patches (n_i, D) with n = 6 and 4 -> (10, D), nothing padded."""
    from types import SimpleNamespace

    from srcal.search.engines.hf import HFEngine, HFPrompt

    eng = HFEngine.__new__(HFEngine)
    eng.device, eng.model = "cpu", SimpleNamespace(dtype=torch.float32)
    a = HFPrompt("a", [1, 2], {"pixel_values": torch.ones(1, 5, 3, 2, 2), "image_sizes": torch.tensor([[4, 3]])})
    b = HFPrompt("b", [1, 2], {"pixel_values": torch.ones(1, 4, 3, 2, 2), "image_sizes": torch.tensor([[9, 2]])})
    out = eng._vision_batch([(a, (), 0), (b, (), 1)], width=2)
    assert out["pixel_values"].shape == (2, 5, 3, 2, 2) and out["pixel_values"][1, 4].abs().sum() == 0
    assert out["pixel_values"][1, :4].min() == 1 and out["image_sizes"].tolist() == [[4, 3], [9, 2]]
    q1 = HFPrompt("q1", [1], {"pixel_values": torch.ones(6, 8), "image_grid_thw": torch.tensor([[1, 2, 3]])})
    q2 = HFPrompt("q2", [1], {"pixel_values": torch.ones(4, 8), "image_grid_thw": torch.tensor([[1, 2, 2]])})
    out = eng._vision_batch([(q1, (), 0), (q2, (), 1)], width=1)
    assert out["pixel_values"].shape == (10, 8) and out["image_grid_thw"].tolist() == [[1, 2, 3], [1, 2, 2]]
