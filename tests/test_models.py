"""srcal.models: the tiny offline models (tiny.py) and the loading / LoRA / model-artifact helpers (loading.py)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(2)


def _world_text(n: int = 400) -> list[str]:
    """Shapes-world text: the tokenizer's training corpus and the text the round-trip test checks."""
    from srcal.config import ShapesWorldConfig

    try:
        from srcal.data import shapes
    except ImportError:  # the shapes world lands in a parallel commit; until then, world-like text
        return [f"The {c} {s} is in the {p} cell. There are {k} objects.\nAnswer: {k + 10}"
                for k in range(4) for c in ("red", "green", "blue", "yellow")
                for s in ("circle", "square", "triangle") for p in ("top-left", "center", "bottom right")]
    return shapes.corpus(ShapesWorldConfig(), n, seed=0)


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
    """notes/environment.md §10: AutoTokenizer builds Qwen2Tokenizer for qwen2 folders and re-creates its
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

    from srcal.models.tiny import load_processor

    dirs, _, _ = tiny_dirs
    model = AutoModelForImageTextToText.from_pretrained(dirs["qwen2_vl"])
    proc = load_processor(dirs["qwen2_vl"])
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
