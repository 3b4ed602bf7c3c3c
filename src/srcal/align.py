"""Stage 4b: preference fine-tuning — DPO plus an SFT term on the chosen answer (RPO style), with TRL.

SRC (Wu et al., ICML 2025, §3.4) trains the policy on the curated (chosen, rejected) pairs with DPO
(β 0.1) plus an SFT loss on the chosen response (weight 0.02), LoRA r 256 / α 512, lr 5e-7. In TRL 1.16
``rpo_alpha`` is gone; the same objective is ``DPOConfig(loss_type=["sigmoid", "sft"],
loss_weights=[1.0, w])`` (TRL 1.x): the "sft" term is the mean NLL per token of
the chosen completions.

Model stack (docs/architecture.md "Model artifact"): the previous policy (RFT for round 1, round k−1
after) is loaded *merged*; a fresh LoRA from ``align.lora`` is put on top and trained. The reference
model is that same network with the adapter disabled — TRL's implicit reference — so round k is
referenced to round k−1's policy without holding a second copy.

Multi-GPU: with ``align.world_size > 1`` the stage re-launches itself under ``torchrun`` and the
DeepSpeed config named by ``align.deepspeed`` (``configs/deepspeed/zero2.json`` / ``zero3.json``) is
passed to the trainer; rank 0 writes the artifact.

Resume: checkpoints go to ``<out>/checkpoints`` (``out`` is the stage runner's scratch directory, stable
per output URI), so a killed run continues from its last checkpoint; they are deleted once the adapter is
saved, so the published artifact holds only the model.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from srcal.run.jsonl import read_jsonl

log = logging.getLogger("srcal.align")


def fit_pairs(pairs: list[dict], max_prompt_chars: int) -> tuple[list[dict], list[dict]]:
    """(kept, too long): DPO here never truncates (image tokens must survive), so a pair whose prompt is
    over ``data.max_prompt_chars`` is set aside before TRL tokenizes it (it would size every padded batch)."""
    from srcal.data.schema import prompt_chars_problem

    kept, too_long = [], []
    for p in pairs:
        problem = prompt_chars_problem(p, max_prompt_chars)
        if problem:
            log.warning("align: pair %s set aside: %s", p.get("id"), problem)
            too_long.append({"id": p.get("id"), "reason": problem})
        else:
            kept.append(p)
    return kept, too_long


def too_few_pairs_message(n: int, min_pairs: int) -> str:
    """The error a user sees when a round has too little data: it names the knobs that produce more."""
    return (
        f"align: only {n} preference pairs (curate.min_pairs={min_pairs}); DPO on so few pairs is noise. "
        "Relax curation: --set curate.min_margin=<lower>, --set curate.min_confidence=<lower>, "
        "--set curate.require_correct=false; or produce more candidates: raise data.calib_size or "
        "search.n_candidates (see round*/curate/summary.json for why samples were dropped)."
    )


def preference_rows(pairs: list[dict[str, Any]], data_dir: Path | None) -> list[dict[str, Any]]:
    """pairs.jsonl rows → TRL's vision conversational preference format (one image per row)."""
    from PIL import Image

    from srcal.models.loading import plain_question_messages

    rows = []
    for p in pairs:
        row = {
            # the same unprompted user turn RFT trained and search sampled with
            "prompt": plain_question_messages(p["question"], p.get("choices")),
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": p["chosen"]}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": p["rejected"]}]}],
        }
        if p.get("image"):
            if data_dir is None:
                raise FileNotFoundError(f"pair {p.get('id')}: image {p['image']} but no data input given")
            with Image.open(data_dir / p["image"]) as im:
                row["images"] = [im.convert("RGB")]
        rows.append(row)
    return rows


def dpo_config(cfg, out: Path, *, seed: int, on_cpu: bool, bf16: bool, n_pairs: int):
    """Build TRL's DPOConfig from the recipe's ``align`` section (every number comes from the recipe).

    On CPU both ``use_cpu=True`` and ``bf16=False`` are needed: TRL defaults to bf16, which raises on
    CPU, and ``use_cpu`` alone runs slow bf16 autocast.
    """
    from trl import DPOConfig

    steps_per_epoch = max(1, math.ceil(n_pairs / (cfg.batch_size * cfg.grad_accum * cfg.world_size)))
    return DPOConfig(
        output_dir=str(out / "checkpoints"),
        beta=cfg.beta,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, cfg.sft_weight],
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type="constant",
        max_length=None,  # VLMs: never truncate image tokens
        gradient_checkpointing=False,  # tiny models: recompute costs more than it saves
        logging_steps=1,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or steps_per_epoch,
        save_total_limit=2,
        report_to="none",
        seed=seed,
        use_cpu=on_cpu,
        bf16=bf16,
        deepspeed=cfg.deepspeed or None,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _on_cpu(recipe) -> bool:
    from srcal.models.loading import pick_device

    return pick_device(recipe.device) == "cpu"


def train_dpo(recipe, pairs: list[dict[str, Any]], base_dir: Path, policy_dir: Path, data_dir: Path | None,
              out: Path) -> dict[str, Any]:
    """Load the merged previous policy, add a fresh LoRA, train DPO + SFT, save the adapter into ``out``.

    Returns the training log summary (first/last loss, reward accuracy/margins, steps, resumed-from).
    """
    import torch
    from datasets import Dataset
    from trl import DPOTrainer

    from srcal.models.chat import bos_like_inference, end_assistant_turns, end_token_ids
    from srcal.models.loading import load_policy, lora_config

    cfg = recipe.align
    on_cpu = _on_cpu(recipe)
    torch.manual_seed(recipe.seed)
    model, processor = load_policy(base_dir, policy_dir, dtype=recipe.model.dtype,
                                   device="cpu" if on_cpu else "cuda",
                                   attn_implementation=recipe.model.attn_implementation)
    model.train()
    # chosen/rejected end with the end token even where the template omits it (srcal.models.chat)
    dataset = Dataset.from_list(end_assistant_turns(preference_rows(pairs, data_dir), processor,
                                                    end_token_ids(processor, model)))
    args = dpo_config(cfg, out, seed=recipe.seed, on_cpu=on_cpu, n_pairs=len(pairs),
                      bf16=not on_cpu and recipe.model.dtype == "bfloat16")
    from transformers import PrinterCallback

    from srcal.run.distributed import last_checkpoint

    resume = last_checkpoint(out / "checkpoints")
    if resume:
        log.info("align: resuming from %s", resume)
    # TRL renders the chat template and tokenizes with add_special_tokens=False (text rows at construction,
    # image rows in the collator): the llava-hf templates write no BOS, so without this the policy is trained
    # on sequences that start differently from the ones it sees at inference (same guard as RFT).
    with bos_like_inference(processor):
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                             peft_config=lora_config(cfg.lora))
        trainer.remove_callback(PrinterCallback)  # per-step dicts go to train_log.jsonl, not the console
        result = trainer.train(resume_from_checkpoint=resume)
    history = [h for h in trainer.state.log_history if "loss" in h]
    # save_model on every rank: under ZeRO-3 it gathers the sharded LoRA weights (a rank-0
    # model.save_pretrained would write empty partitions); it writes only on rank 0, adapter files only.
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(out))
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the recipe is the record
        with (out / "train_log.jsonl").open("w") as f:
            for h in trainer.state.log_history:
                f.write(json.dumps(h) + "\n")
    losses = [h["loss"] for h in history]
    last = history[-1] if history else {}
    return {
        "pairs": len(pairs),
        "steps": trainer.state.global_step,
        "resumed_from": Path(resume).name if resume else None,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_finite": all(math.isfinite(x) for x in losses),
        "rewards_accuracy_last": last.get("rewards/accuracies"),
        "rewards_margin_last": last.get("rewards/margins"),
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
    }


def run_align(recipe, inputs: dict[str, Path], out: Path, **options: Any) -> dict[str, Any]:
    """Stage ``align``: pairs + previous policy → a model artifact one LoRA deeper, named by the ``round`` option.

    Inputs: ``pairs`` (curate output), ``policy`` (RFT or previous round's model artifact), ``base`` (the
    base LVLM dir), ``data`` (for the images). Raises StageError before touching TRL when there are fewer
    than ``curate.min_pairs`` pairs.
    """
    from srcal.models.loading import new_model_artifact
    from srcal.errors import StageError

    t0 = time.time()
    name = options.get("round", "align")
    pairs, too_long = fit_pairs(read_jsonl(Path(inputs["pairs"]) / "pairs.jsonl"), recipe.data.max_prompt_chars)
    if len(pairs) < recipe.curate.min_pairs:
        raise StageError(too_few_pairs_message(len(pairs), recipe.curate.min_pairs))
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(inputs["data"]) if "data" in inputs else None
    if recipe.align.world_size > 1:
        from srcal.run.distributed import launch_torchrun

        train = launch_torchrun("srcal.align:train_job", recipe, inputs, out, recipe.align.world_size,
                                stage="align")
    else:
        train = train_dpo(recipe, pairs, Path(inputs["base"]), Path(inputs["policy"]), data_dir, out)
    if not train.get("loss_finite", True):
        raise StageError(f"align: training loss became non-finite ({train}); lower align.lr")
    new_model_artifact(out, Path(inputs["policy"]), name)
    for leftover in ("checkpoints", "_dist_job.json", "_train_summary.json"):
        p = out / leftover
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return {"counts": {"pairs": len(pairs), "prompt_too_long": len(too_long)}, "train": train, "name": name,
            "timings_s": {"align": round(time.time() - t0, 3)}}


def train_job(recipe, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """What each torchrun worker runs (``srcal.run.distributed.main``): the pairs that fit, then DPO."""
    pairs, _ = fit_pairs(read_jsonl(inputs["pairs"] / "pairs.jsonl"), recipe.data.max_prompt_chars)
    return train_dpo(recipe, pairs, inputs["base"], inputs["policy"], inputs.get("data"), out)
