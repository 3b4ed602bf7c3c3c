"""align: real TRL DPO + SFT term with a fresh LoRA on a tiny LLaVA; reference = previous policy; resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from srcal.config import load_recipe

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
torch.set_num_threads(2)

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny LLaVA base, an RFT-like policy artifact (random non-zero LoRA, so base ≠ policy), images,
    and 12 preference pairs (chosen names the right colour, rejected a wrong one)."""
    from peft import get_peft_model
    from PIL import Image

    from srcal.config import LoraConfig
    from srcal.models import tiny
    from srcal.models.loading import load_lvlm, lora_config, new_model_artifact

    root = tmp_path_factory.mktemp("align")
    corpus = [f"The square is {c}. It is {c}.\nAnswer: {c}" for c in COLORS] * 20 + ["What colour is the square?"]
    base = tiny.build_llava(tiny.train_tokenizer(corpus, 320), root / "base", image_size=16, patch_size=8,
                            vision_hidden=32, text_hidden=64, text_heads=1, text_layers=1)
    rft = root / "rft"
    new_model_artifact(rft, None, "rft", family="llava")
    model, proc = load_lvlm(base)
    torch.manual_seed(0)
    cfg = lora_config(LoraConfig(r=2, alpha=4))
    cfg.init_lora_weights = False
    get_peft_model(model, cfg).save_pretrained(rft)
    proc.save_pretrained(rft)

    data = root / "data"
    (data / "images").mkdir(parents=True)
    pairs = []
    names = list(COLORS)
    for i in range(12):
        c, wrong = names[i % 4], names[(i + 1) % 4]
        Image.new("RGB", (16, 16), COLORS[c]).save(data / "images" / f"s{i}.png")
        pairs.append({"id": f"s{i}", "image": f"images/s{i}.png", "question": "What colour is the square?",
                      "chosen": f"The square is {c}.\nAnswer: {c}",
                      "rejected": f"The square is {wrong}.\nAnswer: {wrong}"})
    pdir = root / "pairs"
    pdir.mkdir()
    (pdir / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return {"base": base, "policy": rft, "data": data, "pairs": pdir}


def _recipe(*extra):
    return load_recipe("tiny", ["device=cpu", "align.lora.r=4", "align.lora.alpha=8", "align.batch_size=4",
                                "align.lr=5e-3", "align.epochs=1", "align.save_steps=1", "curate.min_pairs=4",
                                *extra])


def _logits(model, proc, data):
    from PIL import Image

    from srcal.models.loading import plain_question_messages

    prompt = proc.apply_chat_template(plain_question_messages("What colour is the square?"),
                                      add_generation_prompt=True)
    enc = proc(images=[Image.open(data / "images" / "s0.png").convert("RGB")], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_align_trains_a_new_lora_on_the_previous_policy(world, tmp_path):
    """One epoch of 12 pairs at batch 4 = 3 steps. Step 1: the fresh LoRA's B is 0, so policy = reference
    = the merged RFT policy and the logged reward margin is exactly 0 (the reference is the previous
    policy, not the base). After training the loaded policy differs from the RFT policy; the artifact
    stacks RFT's adapter under the new one."""
    from srcal.align import run_align
    from srcal.models.loading import load_policy, read_meta

    out = tmp_path / "round1"
    summary = run_align(_recipe(), dict(world), out, round="round1")
    train = summary["train"]
    assert train["steps"] == 3 and train["loss_finite"]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    first = next(h for h in log if "loss" in h)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    # loss = −log σ(0) + w·NLL = ln 2 + 0.02·NLL > ln 2
    assert first["loss"] > math.log(2) and math.isfinite(first["loss"])
    assert read_meta(out) == {"family": "llava", "stack": ["00-rft"], "name": "round1"}
    assert (out / "adapter_model.safetensors").exists() and not (out / "checkpoints").exists()
    new, proc = load_policy(world["base"], out)
    old, _ = load_policy(world["base"], world["policy"])
    assert not torch.allclose(_logits(new, proc, world["data"]), _logits(old, proc, world["data"]), atol=1e-4)


def test_align_resumes_from_checkpoint(world, tmp_path):
    """A run stopped after 3 steps (one epoch) leaves checkpoint-3; the same stage asked for two epochs
    continues from it (global step 3 → 6) instead of starting over, and its last steps' losses match an
    uninterrupted 6-step run (the checkpoint carries optimizer, scheduler and RNG state)."""
    from srcal.align import train_dpo
    from srcal.run.jsonl import read_jsonl

    pairs = read_jsonl(world["pairs"] / "pairs.jsonl")
    args = (pairs, world["base"], world["policy"], world["data"])
    out = tmp_path / "resumed"
    first = train_dpo(_recipe(), *args, out)
    assert first["steps"] == 3 and (out / "checkpoints" / "checkpoint-3").exists()
    resumed = train_dpo(_recipe("align.epochs=2"), *args, out)
    assert resumed["resumed_from"] == "checkpoint-3" and resumed["steps"] == 6
    full = train_dpo(_recipe("align.epochs=2"), *args, tmp_path / "full")
    assert full["resumed_from"] is None
    assert resumed["loss_last"] == pytest.approx(full["loss_last"], rel=1e-4)


def test_too_few_pairs_is_a_clear_error_before_trl(world, tmp_path):
    from srcal.align import run_align
    from srcal.errors import StageError

    with pytest.raises(StageError, match=r"only 12 preference pairs.*curate.min_margin.*curate.min_confidence"):
        run_align(_recipe("curate.min_pairs=50"), dict(world), tmp_path / "x", round="round1")
    assert not (tmp_path / "x" / "adapter_model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_two_process_cpu_smoke(world, tmp_path, stage):
    """ZeRO-2/3 configs drive a real 2-process (gloo) DPO run on CPU through torchrun."""
    pytest.importorskip("deepspeed")
    from srcal.align import run_align

    cfg = Path(__file__).resolve().parents[1] / "configs" / "deepspeed" / f"zero{stage}.json"
    assert cfg.exists()
    recipe = _recipe("align.world_size=2", f"align.deepspeed={cfg}", "align.batch_size=2")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(tmp_path.parent / "torch_ext"))
    summary = run_align(recipe, dict(world), tmp_path / f"z{stage}", round="round1")
    assert summary["train"]["loss_finite"] and summary["train"]["steps"] == 3
    from safetensors.torch import load_file

    weights = load_file(tmp_path / f"z{stage}" / "adapter_model.safetensors")
    assert weights and all(t.numel() > 0 for t in weights.values())  # ZeRO-3 shards were gathered
    assert any(k.endswith("lora_B.weight") and t.abs().sum() > 0 for k, t in weights.items())  # trained
