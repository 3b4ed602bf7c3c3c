"""Stage 1 of SRC: the base LVLM, RAP augmentation with a teacher, and rationale fine-tuning (RFT).

* ``base`` (:func:`run_base`): the model SRC starts from. The paper starts from instruction-tuned LVLMs
  trained mostly on short answers; for the shapes world we build the tiny LLaVA (``srcal.models.tiny``) and
  fully fine-tune it on short answers (``base_train.jsonl``) — well above chance, still wrong often, so that
  calibration has room. Real recipes write a pointer to the hub id / path instead of copying weights.
* RAP augmentation (:func:`augment`): a **teacher** turns each sample into a rationale-answer pair (RAP):
  the oracle teacher in the shapes world, an OpenAI-compatible VLM endpoint for real data (the paper uses
  e.g. Qwen2-VL-72B), or the dataset's own rationale where one ships. A RAP is kept only if its parsed
  answer matches the ground truth (benchmark scoring rules, ``srcal.answers.score_answer``); every drop
  is counted by reason. Teacher replies are cached in a JSONL keyed by teacher identity + sample, so a
  re-run never pays twice.
* ``rft`` (:func:`run_rft`): LoRA SFT with TRL on (plain question → RAP). The prompt carries **no**
  instruction to reason (SRC §3.1), so the model learns to answer in RAP form unprompted. LoRA stays in the
  language model (vLLM can serve it). Checkpoints every ``rft.save_steps`` in the stage's stable scratch
  directory; a re-run after a kill resumes from the last one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

from srcal.run import jsonl

log = logging.getLogger("srcal.rationale")

IGNORE_INDEX = -100


# =============================================================================================== helpers


def _read_split(data_dir: Path, name: str, max_rejected_share: float,
                max_prompt_chars: int = 0) -> tuple[list[dict], list[dict]]:
    """Rows of ``<name>.jsonl`` whose images exist and decode and whose prompt is within
    ``max_prompt_chars``; the rest are quarantined (rejected) before the teacher or a tokenizer sees them."""
    from srcal.data.schema import read_jsonl

    path = data_dir / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the data artifact has no '{name}' split (run `srcal data build`)")
    return read_jsonl(path, images_root=data_dir, max_rejected_share=max_rejected_share,
                      max_prompt_chars=max_prompt_chars)


def _load_image(data_dir: Path, rel: str):
    from PIL import Image

    with Image.open(data_dir / rel) as im:
        return im.convert("RGB")


# ================================================================================================ base


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


def build_tiny_from_recipe(recipe, out: Path) -> Path:
    """The untrained tiny LVLM of ``recipe.model.family``, tokenizer trained on shapes-world text."""
    from srcal.data.corpus import corpus as world_corpus
    from srcal.models.capabilities import CAPABILITIES, tiny_family
    from srcal.models.tiny import build_tiny_lvlm

    t = recipe.model.tiny
    corpus = world_corpus(recipe.data.shapes, t.corpus_samples, seed=recipe.seed)
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

    AdamW with linear warm-up then cosine decay, gradient clipping; the loss is on the answer tokens only.
    Writes the model + processor into ``out`` and the loss curve into ``train_log.jsonl``.
    """
    import torch

    from srcal.data.oracle import short_answer_text
    from srcal.models.capabilities import tiny_family
    from srcal.models.loading import load_processor, pick_device, plain_question_messages

    cfg = recipe.base_train
    torch.manual_seed(recipe.seed)
    t0 = time.time()
    rows, rejected = _read_split(data_dir, "base_train", recipe.data.max_rejected_share)
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
                                        short_answer_text(r), _load_image(data_dir, r["image"])) for r in rows])
    captions = []
    if cfg.caption_share > 0:
        from srcal.data.shapes import describe_scene
        from srcal.data.world import in_shapes_world

        scened = [r for r in rows if in_shapes_world(r)]
        prompts = caption_prompts(cfg.caption_prompt, cfg.caption_prompts, len(scened), recipe.seed)
        captions = encode_examples(proc, [(plain_question_messages(p), describe_scene(r["scene"]),
                                           _load_image(data_dir, r["image"])) for p, r in zip(prompts, scened)])
    n_caption = round(cfg.batch_size * cfg.caption_share) if captions else 0
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
            "counts": {"train_rows": len(rows), "caption_rows": len(captions), "rejected": len(rejected),
                       "steps": cfg.steps},
            "params": sum(p.numel() for p in model.parameters()),
            "final_loss": sum(tail) / len(tail) if tail else None,
            "steps_per_s": round(cfg.steps / max(t_train - t_enc, 1e-9), 3),
            "timings_s": {"encode": round(t_enc - t0, 3), "train": round(t_train - t_enc, 3)}}


# ============================================================================================ teacher


def teacher_identity(recipe) -> dict[str, Any]:
    """What makes two teacher outputs interchangeable: the cache key's teacher part."""
    t = recipe.teacher
    ident: dict[str, Any] = {"kind": t.kind, "prefix": recipe.rap_answer_prefix}
    if t.kind == "openai":
        ident.update(url=t.url, model=t.model, prompt=t.prompt, max_tokens=t.max_tokens, temperature=t.temperature)
    if t.kind == "oracle":
        ident.update(seed=recipe.seed)
        if t.hallucination_rate > 0:  # only when set, so the perfect teacher's cache key is unchanged
            ident.update(hallucination_rate=t.hallucination_rate)
        if t.describe_first:
            ident.update(describe_first=True)
    return ident


def sample_key(sample: dict) -> str:
    """Cache key of one sample: id, question and answer (an edited row is a new request)."""
    blob = json.dumps([sample["id"], sample["question"], sample["answer"], sample.get("choices")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class TeacherCache:
    """Append-only JSONL of teacher replies ``{"key", "id", "text"}``; later lines win.

    Only successful replies are cached (a reply whose answer is wrong is a success of the endpoint and is
    not asked again); failures are retried on the next run. Writes are flushed per line, so a killed run
    keeps what it paid for, and a torn last line is skipped on reading.
    """

    def __init__(self, path: Path):
        self.path = path
        rows = jsonl.read_jsonl(path, missing_ok=True)  # a torn last line from a killed run is skipped
        self.entries: dict[str, dict] = {rec["key"]: rec for rec in rows if "key" in rec}
        if jsonl.is_torn(path):  # so the next append starts on a line of its own
            jsonl.write_jsonl(path, rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the stage; closed in close())

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, rec: dict) -> None:
        self.entries[rec["key"]] = rec
        self._fh.write(jsonl.dumps_line(rec) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def teacher_cache_path(recipe, out: Path) -> Path:
    """Where teacher replies are cached: ``teacher.cache_dir`` if set, else the user cache.

    Keyed by the teacher identity, so changing the teacher's model or prompt starts a new file.
    """
    from srcal.run import store

    ident = hashlib.sha256(json.dumps(teacher_identity(recipe), sort_keys=True).encode()).hexdigest()[:16]
    root = Path(recipe.teacher.cache_dir) if recipe.teacher.cache_dir else store.cache_root() / "teacher"
    return root / f"{recipe.teacher.kind}-{ident}.jsonl"


def _endpoint_fn(recipe, data_dir: Path):
    """A function sample → RAP text that calls the OpenAI-compatible teacher (retries inside the client)."""
    from srcal.serve.client import OpenAIClient, image_part
    from srcal.data.rap import parse_rap
    from srcal.models.loading import question_text

    t = recipe.teacher
    client = OpenAIClient(t.url, t.model, concurrency=t.concurrency, timeout_s=t.timeout_s, retries=t.retries,
                          seed=recipe.seed)
    prefix = recipe.rap_answer_prefix

    def parse(text: str) -> str:
        if parse_rap(text, prefix).answer is None:  # retried by the client as "unparseable"
            raise ValueError(f"teacher reply has no '{prefix}' line: {text[:80]!r}")
        return text.strip()

    def ask(sample: dict) -> str:
        prompt = t.prompt.format(question=question_text(sample["question"], sample.get("choices")))
        msg = {"role": "user", "content": [image_part(data_dir / sample["image"]), {"type": "text", "text": prompt}]}
        return client.chat_text([msg], parse=parse, max_tokens=t.max_tokens, temperature=t.temperature)

    return client, ask


def augment(recipe, samples: list[dict], data_dir: Path, cache_path: Path) -> tuple[list[dict], list[dict], dict]:
    """Rationale-answer pairs for ``samples`` from the recipe's teacher, filtered by answer match.

    Returns (kept RAP rows ``{..sample, "rap", "teacher"}``, dropped rows with ``reason``, counts). Reasons:
    ``teacher_failed:<kind>`` (timeouts, 5xx, garbage after retries), ``no_answer`` (unparseable RAP),
    ``answer_mismatch`` (the RAP's answer is wrong), ``no_rationale`` (teacher kind ``dataset`` and the row
    ships none).
    """
    from collections import Counter

    from srcal.serve.client import Failure
    from srcal.data.rap import parse_rap, render_rap, split_sentences
    from srcal.answers import score_answer

    prefix = recipe.rap_answer_prefix
    kind = recipe.teacher.kind
    cache = TeacherCache(cache_path)
    texts: dict[str, str | Failure] = {}
    counts: Counter = Counter()
    try:
        todo = []
        for s in samples:
            k = sample_key(s)
            hit = cache.get(k)
            if hit is not None and "text" in hit:
                texts[s["id"]] = hit["text"]
                counts["cache_hits"] += 1
            elif kind == "oracle":
                from srcal.data.world import in_shapes_world

                if not in_shapes_world(s):
                    texts[s["id"]] = Failure("no_scene", "the oracle teacher needs a shapes-world scene")
                    continue
                from srcal.data import oracle

                rng = random.Random(f"{recipe.seed}:teacher:{s['id']}")
                texts[s["id"]] = oracle.teacher_rap(s, rng, prefix, recipe.teacher.hallucination_rate,
                                                   recipe.teacher.describe_first)
                cache.put({"key": k, "id": s["id"], "text": texts[s["id"]]})
            elif kind == "dataset" or (recipe.teacher.use_dataset_rationales and s.get("rationale")):
                if s.get("rationale"):
                    texts[s["id"]] = render_rap(split_sentences(s["rationale"]) or [s["rationale"].strip()],
                                                s["answer"], prefix)
                else:
                    texts[s["id"]] = Failure("no_rationale", "row ships no rationale")
            else:
                todo.append(s)
        if todo:
            client, ask = _endpoint_fn(recipe, data_dir)
            by_index = {i: s for i, s in enumerate(todo)}

            def on_done(i: int, res) -> None:
                s = by_index[i]
                if isinstance(res, Failure):
                    texts[s["id"]] = res
                else:
                    texts[s["id"]] = res
                    cache.put({"key": sample_key(s), "id": s["id"], "text": res})
                    counts["teacher_calls_ok"] += 1

            try:
                client.map_requests(todo, ask, on_done=on_done)
            finally:
                client.close()
    finally:
        cache.close()

    kept, dropped = [], []
    for s in samples:
        res = texts.get(s["id"])
        reason = None
        if isinstance(res, Failure) or res is None:
            fk = res.kind if isinstance(res, Failure) else "missing"
            reason = "no_rationale" if fk == "no_rationale" else f"teacher_failed:{fk}"
        else:
            parsed = parse_rap(res, prefix)
            if parsed.answer is None:
                reason = "no_answer"
            elif not parsed.sentences:
                reason = "no_rationale"
            elif not score_answer(s, parsed.answer):
                reason = "answer_mismatch"
        if reason:
            counts[f"dropped:{reason}"] += 1
            dropped.append({"id": s["id"], "reason": reason, "teacher_output": res if isinstance(res, str) else
                            (res.reason if isinstance(res, Failure) else None)})
        else:
            kept.append({**s, "rap": res.strip(), "teacher": kind})
    counts["kept"] = len(kept)
    return kept, dropped, dict(counts)


# ================================================================================================ RFT


def _sft_rows(raps: list[dict], data_dir: Path) -> tuple[list[dict], list[dict]]:
    """TRL prompt/completion rows with image *paths*; rows whose image fails to decode are quarantined.

    Paths, not PIL images: ``datasets`` decodes them lazily per batch (:func:`sft_dataset`), so 20K real
    images are never all held in memory at once.
    """
    from srcal.models.loading import plain_question_messages

    rows, bad = [], []
    for r in raps:
        try:
            _load_image(data_dir, r["image"])
        except Exception as e:  # noqa: BLE001 — any decoder error means the same: unusable image
            bad.append({"id": r["id"], "field": "image", "reason": f"image failed to load: {type(e).__name__}: {e}"})
            continue
        rows.append({"images": [str(data_dir / r["image"])],
                     "prompt": plain_question_messages(r["question"], r.get("choices")),
                     "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["rap"]}]}]})
    return rows, bad


def caption_rows(samples: list[dict], data_dir: Path, n_rap_rows: int, share: float, prompt: str,
                 seed: int, extra_prompts: list[str] | tuple = ()) -> list[dict]:
    """Captioning rows (``prompt`` -> the scene description) to mix into RFT, ``share`` of all rows.

    Why: the tiny base captions its scenes almost perfectly, yet LoRA RFT on (question -> RAP) alone
    drifts its describe-first rationales off the image (docs/effect.md); rows in the very form the base was
    trained on keep that skill in the adapter. ``n = round(n_rap_rows * share / (1 - share))`` rows, from
    the samples with a shapes ``scene`` in a seeded shuffle (cycled when ``n`` exceeds them), so the
    row set and the RFT step count are fixed by the inputs; with ``extra_prompts`` each row's prompt is
    drawn as in base training (:func:`caption_prompts`).
    """
    from srcal.data.shapes import describe_scene
    from srcal.data.world import in_shapes_world
    from srcal.models.loading import plain_question_messages

    if share <= 0 or n_rap_rows <= 0:
        return []
    pool = [s for s in samples if in_shapes_world(s)]
    if not pool:
        return []
    n = round(n_rap_rows * share / (1 - share))
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    rows = []
    for i, text in enumerate(caption_prompts(prompt, list(extra_prompts), n, seed)):
        s = pool[order[i % len(pool)]]
        rows.append({"images": [str(data_dir / s["image"])], "prompt": plain_question_messages(text),
                     "completion": [{"role": "assistant",
                                     "content": [{"type": "text", "text": describe_scene(s["scene"])}]}]})
    return rows


def sft_dataset(rows: list[dict]):
    """A ``datasets.Dataset`` of :func:`_sft_rows` rows whose ``images`` decode to RGB PIL images on access."""
    from datasets import Dataset, Image, List

    return Dataset.from_list(rows).cast_column("images", List(Image(mode="RGB")))


def train_sft(recipe, base_dir: Path, rows: list[dict], out: Path, *, callbacks=None) -> dict:
    """LoRA SFT of the base LVLM on (plain question → RAP) rows with TRL; resumes from ``out/checkpoints``.

    Saves the adapter (``adapter_model.safetensors`` + ``adapter_config.json``) and the processor into
    ``out``. Returns training stats (steps, steps/s, final loss, whether it resumed).
    """
    import torch
    from trl import SFTConfig, SFTTrainer

    from srcal.models.chat import bos_like_inference, end_assistant_turns, end_token_ids
    from srcal.run.distributed import last_checkpoint
    from srcal.models.loading import load_lvlm, lora_config, pick_device

    c = recipe.rft
    device = pick_device(recipe.device)
    torch.manual_seed(recipe.seed)
    model, proc = load_lvlm(base_dir, dtype=recipe.model.dtype, device=device,
                            attn_implementation=recipe.model.attn_implementation)
    proc.tokenizer.padding_side = "right"
    # targets must end with the end token even where the template omits it (LLaVA-1.5), or the tuned
    # model never learns to stop (srcal.models.chat)
    rows = end_assistant_turns(rows, proc, end_token_ids(proc, model))
    ckpt_dir = out / "checkpoints"
    resume = last_checkpoint(ckpt_dir)
    args = SFTConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=c.batch_size, gradient_accumulation_steps=c.grad_accum,
        num_train_epochs=c.epochs, learning_rate=c.lr, lr_scheduler_type=c.lr_scheduler,
        warmup_steps=c.warmup_ratio if c.warmup_ratio < 1 else 0,  # transformers 5: a float < 1 is a ratio
        weight_decay=0.0, max_grad_norm=c.max_grad_norm, logging_steps=c.logging_steps,
        save_strategy="steps" if c.save_steps else "no", save_steps=c.save_steps or 500, save_total_limit=2,
        report_to="none", seed=recipe.seed, data_seed=recipe.seed, max_length=c.max_length or None,
        use_cpu=device == "cpu", bf16=recipe.model.dtype == "bfloat16" and device != "cpu",
        fp16=recipe.model.dtype == "float16" and device != "cpu", gradient_checkpointing=c.gradient_checkpointing,
        dataloader_num_workers=0, deepspeed=c.deepspeed or None, disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(rows), processing_class=proc,
                         peft_config=lora_config(c.lora), callbacks=callbacks)
    t0 = time.time()
    start_step = 0
    if resume is not None:
        start_step = json.loads((resume / "trainer_state.json").read_text()).get("global_step", 0)
        log.info("rft: resuming from %s (step %d)", resume, start_step)
    with bos_like_inference(proc):  # TRL drops special tokens; the llava-hf templates write no BOS
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.time() - t0
    trainer.save_model(str(out))  # rank 0 only; gathers ZeRO-3 shards; PEFT → adapter files only
    if trainer.is_world_process_zero():
        proc.tokenizer.padding_side = "left"
        proc.save_pretrained(out)
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the recipe is the record
    history = trainer.state.log_history
    if trainer.is_world_process_zero():
        jsonl.write_jsonl(out / "train_log.jsonl", history, sort_keys=True)
    losses = [h["loss"] for h in history if "loss" in h]
    steps_run = trainer.state.global_step - start_step
    return {"steps": trainer.state.global_step, "resumed_from_step": start_step if resume else None,
            "steps_per_s": round(steps_run / wall, 3) if wall > 0 else None, "train_wall_s": round(wall, 3),
            "final_loss": losses[-1] if losses else None, "train_loss": result.training_loss,
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}


def run_rft(recipe, inputs: dict[str, Path], out: Path, **options) -> dict:
    """Stage ``rft``: teacher RAPs for ``rft.jsonl``, answer-match filter, LoRA SFT → a model artifact."""
    from srcal.models.loading import family_of, new_model_artifact

    t0 = time.time()
    data_dir, base_dir = Path(inputs["data"]), Path(inputs["base"])
    out.mkdir(parents=True, exist_ok=True)
    samples, rejected = _read_split(data_dir, "rft", recipe.data.max_rejected_share, recipe.data.max_prompt_chars)

    # 1. Rationale-answer pairs from the teacher, filtered by answer match.
    raps, dropped, counts = augment(recipe, samples, data_dir, teacher_cache_path(recipe, out))
    kept_share = len(raps) / max(len(samples), 1)
    if kept_share < recipe.teacher.min_kept_share:
        reasons = {k: v for k, v in counts.items() if k.startswith("dropped:")}
        raise RuntimeError(
            f"rft: only {len(raps)} of {len(samples)} samples ({kept_share:.1%}) got a usable RAP, below "
            f"teacher.min_kept_share={recipe.teacher.min_kept_share}; drops by reason: {reasons}. Check the "
            f"teacher endpoint ({recipe.teacher.url or recipe.teacher.kind}) and prompt, or lower the threshold.")
    t_aug = time.time()

    # 2. Training rows; images that fail to load are quarantined, not fatal.
    rows, bad_images = _sft_rows(raps, data_dir)
    jsonl.write_jsonl(out / "raps.jsonl", raps, sort_keys=True)
    jsonl.write_jsonl(out / "rejected.jsonl", rejected + [{**d, "field": "rap"} for d in dropped] + bad_images,
                      sort_keys=True)
    if not rows:
        raise RuntimeError("rft: no training rows left after filtering; see rejected.jsonl")
    n_rap_rows = len(rows)
    # images that failed to load above are in bad_images; caption rows use only the RAP rows' samples
    ok_ids = {r["id"] for r in raps} - {b["id"] for b in bad_images}
    rows += caption_rows([s for s in samples if s["id"] in ok_ids], data_dir, n_rap_rows,
                         recipe.rft.caption_share, recipe.base_train.caption_prompt, recipe.seed,
                         recipe.base_train.caption_prompts)

    # 3. LoRA SFT (resumes from out/checkpoints after a kill), then the model artifact.
    if recipe.rft.world_size > 1:
        # Workers read raps.jsonl from out, so the teacher is never asked twice (DDP, or DeepSpeed ZeRO
        # when rft.deepspeed names a config such as configs/deepspeed/zero2.json).
        from srcal.run.distributed import launch_torchrun

        stats = launch_torchrun("srcal.rationale:train_job", recipe, inputs, out, recipe.rft.world_size,
                                stage="rft")
    else:
        stats = train_sft(recipe, base_dir, rows, out)
    new_model_artifact(out, None, "rft", family=family_of(base_dir))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # resume state; not part of the artifact
    for leftover in ("_dist_job.json", "_train_summary.json"):
        (out / leftover).unlink(missing_ok=True)
    t_end = time.time()
    return {"counts": {"samples": len(samples) + len(rejected), "rejected_rows": len(rejected),
                       "raps_kept": len(raps), "raps_dropped": len(dropped), "bad_images": len(bad_images),
                       "trained_rows": len(rows), "caption_rows": len(rows) - n_rap_rows, **counts},
            "train": stats, "timings_s": {"augment": round(t_aug - t0, 3), "train": round(t_end - t_aug, 3)}}


# ======================================================================================= multi-process


def train_job(recipe, inputs: dict[str, Path], out: Path) -> dict:
    """What each torchrun worker runs (``srcal.run.distributed.main``): the rows from ``out/raps.jsonl``, then SFT."""
    raps = jsonl.read_jsonl(out / "raps.jsonl")
    rows, _ = _sft_rows(raps, inputs["data"])
    return train_sft(recipe, inputs["base"], rows, out)
