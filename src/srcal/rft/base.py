"""Stage ``base``: the LVLM SRC starts from (:func:`run_base`).

The paper starts from instruction-tuned LVLMs trained mostly on short answers; for the shapes world we build
the tiny LLaVA (``srcal.models.tiny``) and fully fine-tune it on short answers (``base_train.jsonl``) — well
above chance, still wrong often, so that calibration has room (:func:`train_tiny_base`, reused through
``srcal.models.base_cache``). Real recipes write a pointer to the hub id / path instead of copying weights.
Also here: base training's example encoding, and the caption prompts that RFT's caption rows reuse.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

from srcal.rft.inputs import load_image, read_split
from srcal.run import jsonl

log = logging.getLogger("srcal.rft.base")

IGNORE_INDEX = -100


def run_base(recipe, inputs: dict[str, Path], out: Path, **options) -> dict:
    """Stage ``base``: build + short-answer-train the tiny LVLM, or point at a real base model."""
    from srcal.models.capabilities import recipe_family
    from srcal.models.loading import write_base_pointer

    if recipe.model.base != "tiny":
        family = recipe_family(recipe)  # the override, else the checkpoint's model_type
        write_base_pointer(out, recipe.model.base, family)
        return {"base": recipe.model.base, "family": family, "trained": False}
    from srcal.models import base_cache

    data_dir = Path(inputs["data"])
    key = base_cache.base_key(recipe, data_dir)  # a tiny base trained once is reused (srcal.models.base_cache)
    summary = base_cache.restore(key, out) if recipe.base_train.cache else None
    if summary is None:
        summary = {**train_tiny_base(recipe, data_dir, out), "base_key": key}
        if recipe.base_train.cache:
            base_cache.save(key, out, summary)
    return summary


def tiny_corpus(recipe) -> list[str]:
    """The shapes-world text the tiny tokenizer is trained on, and base training's text-only rows."""
    from srcal.world.corpus import corpus as world_corpus

    return world_corpus(recipe.data.shapes, recipe.model.tiny.corpus_samples, seed=recipe.seed)


def build_tiny_from_recipe(recipe, out: Path) -> Path:
    """The untrained tiny LVLM of ``recipe.model.family``, tokenizer trained on shapes-world text."""
    from srcal.models.capabilities import CAPABILITIES, tiny_family
    from srcal.models.tiny import build_tiny_lvlm

    t = recipe.model.tiny
    corpus = tiny_corpus(recipe)
    sizes = {"vision_hidden": t.vision_hidden, "vision_layers": t.vision_layers, "vision_heads": t.vision_heads,
             "text_hidden": t.text_hidden, "text_layers": t.text_layers, "text_heads": t.text_heads,
             "text_intermediate": t.text_intermediate or None}
    family = tiny_family(recipe)
    if CAPABILITIES[family].tiny_patch_size:
        sizes["patch_size"] = t.patch_size
    return build_tiny_lvlm(family, corpus, out, image_size=recipe.data.shapes.image_size,
                           vocab_size=t.vocab_size, sizes=sizes, seed=recipe.seed)


def encode_examples(processor, items: list[tuple[list[dict], str, Any]], chunk: int = 64) -> list[dict[str, Any]]:
    """Token ids, labels and image tensors of (prompt messages, completion, image) examples, unbatched.

    The text is the chat template over prompt + assistant turn; labels cover only the assistant's text and
    its end-of-turn (the tokens after the last ``<|im_start|>assistant\\n``), as TRL's completion-only loss.
    The processor runs on chunks (several times faster than one call per example), then each example is cut
    back out: sequence keys by attention mask (right padding), image tensors by image (Qwen2-VL: by the
    patch count ``prod(image_grid_thw)``).
    """
    tok = processor.tokenizer
    old_side, tok.padding_side = tok.padding_side, "right"
    start_id = tok.convert_tokens_to_ids("<|im_start|>")
    header = len(tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
    seq_keys = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
    out: list[dict[str, Any]] = []
    try:
        for lo in range(0, len(items), chunk):
            part = items[lo:lo + chunk]
            texts = [processor.apply_chat_template(
                [*msgs, {"role": "assistant", "content": [{"type": "text", "text": completion}]}], tokenize=False)
                for msgs, completion, _ in part]
            enc = processor(images=[img for _, _, img in part], text=texts, return_tensors="pt", padding=True)
            n = len(part)
            sizes = enc["image_grid_thw"].prod(-1).tolist() if "image_grid_thw" in enc else [1] * n
            per_image = {k: v.split(sizes if k == "pixel_values" else [1] * n)
                         for k, v in enc.items() if k not in seq_keys}
            lengths = enc["attention_mask"].sum(1).tolist()
            for i in range(n):
                ids = enc["input_ids"][i, :lengths[i]].clone()
                starts = (ids == start_id).nonzero().flatten()
                if len(starts) == 0:
                    raise ValueError("chat template produced no <|im_start|> turn; is it a ChatML-style template?")
                labels = ids.clone()
                labels[: int(starts[-1]) + header] = IGNORE_INDEX
                ex = {k: enc[k][i, :lengths[i]].clone() for k in seq_keys if k in enc}
                ex.update({k: v[i] for k, v in per_image.items()})
                ex["labels"] = labels
                out.append(ex)
    finally:
        tok.padding_side = old_side
    return out


def encode_texts(tokenizer, texts: list[str], max_tokens: int = 256) -> list[dict[str, Any]]:
    """Text-only language-modelling examples: every token of each text is a target (cut at ``max_tokens``).

    Each text starts with the BOS token, as documents do in LM pre-training, so that its first word is a
    target too: a completion's first word has no leading space ("A", not " A") and occurs nowhere else.
    """
    import torch

    start = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    out = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids = torch.tensor((start + ids)[:max_tokens])
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


def encode_example(processor, messages: list[dict], completion: str, image) -> dict[str, Any]:
    """One example of :func:`encode_examples`."""
    return encode_examples(processor, [(messages, completion, image)])[0]


def collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad the sequence keys; concatenate image tensors along dim 0 (LLaVA: images; Qwen2-VL: patches)."""
    import torch

    seq_pad = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
    length = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, Any] = {}
    for key in examples[0]:
        if key in seq_pad:
            batch[key] = torch.stack([torch.nn.functional.pad(e[key], (0, length - len(e[key])), value=seq_pad[key])
                                      for e in examples])
        else:
            batch[key] = torch.cat([e[key] for e in examples], dim=0)
    return batch


def caption_prompts(main: str, extra: list[str], n: int, seed: int) -> list[str]:
    """The user text of each of ``n`` caption rows: ``main``, or with ``extra`` one of ``[main, *extra]`` each.

    Why several: the tiny LM finds a grid cell by its distance from the token it generates, so a base
    captioned under one prompt describes the wrong cells under a prompt of another token length (a
    question); prompts of varied lengths make it read the cell from the image tokens themselves. A seeded
    stream of its own, so ``extra=[]`` leaves every other draw of base training as it was.
    """
    if not extra:
        return [main] * n
    pool, rng = [main, *extra], random.Random(seed + 1)
    return [pool[rng.randrange(len(pool))] for _ in range(n)]


def train_tiny_base(recipe, data_dir: Path, out: Path) -> dict:
    """Full fine-tune of the tiny LVLM on short answers (plain PyTorch loop: faster than Trainer at this size).

    AdamW with linear warm-up then cosine decay, gradient clipping; the loss is on the answer tokens only,
    plus, with ``base_train.text_rows``, every token of text-only rows of shapes-world text (a pre-trained
    LLM's output layer knows every word; a from-scratch one only the words it was trained to output).
    Writes the model + processor into ``out`` and the loss curve into ``train_log.jsonl``.
    """
    import torch

    from srcal.world.oracle import short_answer_text
    from srcal.models.capabilities import tiny_family
    from srcal.models.loading import load_processor, pick_device, plain_question_messages

    cfg = recipe.base_train
    torch.manual_seed(recipe.seed)
    t0 = time.time()
    rows, rejected = read_split(data_dir, "base_train", recipe.data.max_rejected_share)
    if not rows:
        raise ValueError(f"{data_dir}/base_train.jsonl has no usable rows; set data.base_train_size > 0")
    build_dir = out / "_untrained"
    build_tiny_from_recipe(recipe, build_dir)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(build_dir)
    proc = load_processor(build_dir)
    device = pick_device(recipe.device)
    model.to(device).train()
    examples = encode_examples(proc, [(plain_question_messages(r["question"], r.get("choices")),
                                        short_answer_text(r), load_image(data_dir, r["image"])) for r in rows])
    captions = []
    if cfg.caption_share > 0:
        from srcal.world.shapes import describe_scene
        from srcal.world import in_shapes_world

        scened = [r for r in rows if in_shapes_world(r)]
        prompts = caption_prompts(cfg.caption_prompt, cfg.caption_prompts, len(scened), recipe.seed)
        captions = encode_examples(proc, [(plain_question_messages(p), describe_scene(r["scene"]),
                                           load_image(data_dir, r["image"])) for p, r in zip(prompts, scened)])
    n_caption = round(cfg.batch_size * cfg.caption_share) if captions else 0
    texts = encode_texts(proc.tokenizer, tiny_corpus(recipe)) if cfg.text_rows else []
    t_enc = time.time()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_ratio * cfg.steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + __import__("math").cos(__import__("math").pi * (step - warmup) / max(1, cfg.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(recipe.seed)
    order: list[int] = []
    log_rows = []
    pad_id = proc.tokenizer.pad_token_id
    for step in range(cfg.steps):
        n_answer = cfg.batch_size - n_caption
        if len(order) < n_answer:
            perm = list(range(len(examples)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[:n_answer], order[n_answer:]
        picked = [examples[i] for i in idx] + [captions[rng.randrange(len(captions))] for _ in range(n_caption)]
        batch = {k: v.to(device) for k, v in collate(picked, pad_id).items()}
        loss = model(**batch).loss
        if texts:  # text-only rows in their own forward (no image); the loss weighted by rows
            text_batch = collate([texts[rng.randrange(len(texts))] for _ in range(cfg.text_rows)], pad_id)
            text_loss = model(**{k: v.to(device) for k, v in text_batch.items()}).loss
            loss = (len(picked) * loss + cfg.text_rows * text_loss) / (len(picked) + cfg.text_rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"base training diverged at step {step} (loss {loss.item()}); lower base_train.lr")
        log_rows.append({"step": step + 1, "loss": round(loss.item(), 5), "lr": sched.get_last_lr()[0]})
        if (step + 1) % 50 == 0:
            log.info("base step %d/%d loss %.4f", step + 1, cfg.steps, loss.item())
    t_train = time.time()
    model.eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    shutil.rmtree(build_dir)
    jsonl.write_jsonl(out / "train_log.jsonl", log_rows, sort_keys=True)
    if rejected:
        jsonl.write_jsonl(out / "rejected.jsonl", rejected, sort_keys=True)
    tail = [r["loss"] for r in log_rows[-20:]]
    return {"base": "tiny", "family": tiny_family(recipe), "trained": True,
            "counts": {"train_rows": len(rows), "caption_rows": len(captions), "text_rows": len(texts),
                       "rejected": len(rejected),
                       "steps": cfg.steps},
            "params": sum(p.numel() for p in model.parameters()),
            "final_loss": sum(tail) / len(tail) if tail else None,
            "steps_per_s": round(cfg.steps / max(t_train - t_enc, 1e-9), 3),
            "timings_s": {"encode": round(t_enc - t0, 3), "train": round(t_train - t_enc, 3)}}
