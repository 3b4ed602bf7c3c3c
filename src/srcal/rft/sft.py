"""Stage ``rft`` (:func:`run_rft`): teacher RAPs, then LoRA SFT with TRL on (plain question → RAP).

The prompt carries **no** instruction to reason (SRC §3.1), so the model learns to answer in RAP form
unprompted. LoRA stays in the language model (vLLM can serve it). Checkpoints every ``rft.save_steps`` in
the stage's stable scratch directory; a re-run after a kill resumes from the last one. With
``rft.world_size`` > 1 each torchrun worker runs :func:`train_job`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

from srcal.rft.base import caption_prompts
from srcal.rft.inputs import load_image, read_split
from srcal.rft.teacher import augment, teacher_cache_path
from srcal.run import jsonl

log = logging.getLogger("srcal.rft.sft")

TRAIN_ROWS = "_train_rows.jsonl"  # the rows torchrun workers train on; removed when the stage ends


def _sft_rows(raps: list[dict], data_dir: Path) -> tuple[list[dict], list[dict]]:
    """TRL prompt/completion rows with image *paths*; rows whose image fails to decode are quarantined.

    Paths, not PIL images: ``datasets`` decodes them lazily per batch (:func:`sft_dataset`), so 20K real
    images are never all held in memory at once.
    """
    from srcal.models.loading import plain_question_messages

    rows, bad = [], []
    for r in raps:
        try:
            load_image(data_dir, r["image"])
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
    from srcal.world.shapes import describe_scene
    from srcal.world import in_shapes_world
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
    samples, rejected = read_split(data_dir, "rft", recipe.data.max_rejected_share, recipe.data.max_prompt_chars)

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
        # Workers read the very rows built here (RAP and caption rows, image paths), so every process
        # trains what a single process would, and the teacher is never asked twice (DDP, or DeepSpeed
        # ZeRO when rft.deepspeed names a config such as configs/deepspeed/zero2.json).
        from srcal.run.distributed import launch_torchrun

        jsonl.write_jsonl(out / TRAIN_ROWS, rows, sort_keys=True)
        stats = launch_torchrun("srcal.rft.sft:train_job", recipe, inputs, out, recipe.rft.world_size,
                                stage="rft")
    else:
        stats = train_sft(recipe, base_dir, rows, out)
    new_model_artifact(out, None, "rft", family=family_of(base_dir))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # resume state; not part of the artifact
    for leftover in ("_dist_job.json", "_train_summary.json", TRAIN_ROWS):
        (out / leftover).unlink(missing_ok=True)
    t_end = time.time()
    return {"counts": {"samples": len(samples) + len(rejected), "rejected_rows": len(rejected),
                       "raps_kept": len(raps), "raps_dropped": len(dropped), "bad_images": len(bad_images),
                       "trained_rows": len(rows), "caption_rows": len(rows) - n_rap_rows, **counts},
            "train": stats, "timings_s": {"augment": round(t_aug - t0, 3), "train": round(t_end - t_aug, 3)}}


def train_job(recipe, inputs: dict[str, Path], out: Path) -> dict:
    """What each torchrun worker runs (``srcal.run.distributed.main``): the rows :func:`run_rft` wrote, then SFT."""
    return train_sft(recipe, inputs["base"], jsonl.read_jsonl(out / TRAIN_ROWS), out)
