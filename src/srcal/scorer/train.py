"""Stage ``rscorer-train``: train the R-Scorer judge, then measure it on held-out pairs.

Two trainers, picked by ``rscorer.trainer``:

* ``trl`` — TRL ``SFTTrainer`` on prompt/completion rows whose completion is the verdict token, so the
  loss falls on the verdict only (``completion_only_loss``); LoRA (``rscorer.use_lora``) or full
  fine-tune. The path for real judges (Qwen2.5-1.5B class): they already read prose and only need to
  learn the verdict. LoRA weights are merged before saving so that any OpenAI-compatible server (vLLM,
  KServe) serves the judge directory as a plain model.
* ``aux`` — our loop for the tiny judge trained *from scratch*. A
  verdict-only loss gives one bit per example and never leaves chance in minutes; what learns in minutes on
  2 cores is the fact language (``srcal.scorer.judge_format``) plus dense targets: per-claim ok/wrong tags at each
  claim's token and an answer tag (a linear tag head on the hidden state), each response's error count and
  true-claim count at the two scratch slots ``Check A:`` / ``Check B:`` of the prompt (two count heads),
  a language-model loss on the responses, the verdict cross-entropy over the A/B/C logits at the
  last position and, with ``rscorer.margin_weight``, the noise-free quality difference of the pair at that
  position (seven classes). The verdict is learned last — after the claim checks and the counts it reads —
  so ``rscorer.lr_hold`` keeps the peak learning rate for a share of the steps before the cosine decay.
  The heads exist only during training: the saved judge is a plain ``Qwen2ForCausalLM`` whose verdict
  is still one forward pass, read at the last position — exactly what vLLM serves.
  TRL cannot express targets at input positions, hence the custom loop. Its measured held-out quality,
  the learning rates that do and do not learn, and its training time: docs/benchmarks.md (R-Scorer).

Both write the judge as an HF model directory (``config.json``, ``model.safetensors``, tokenizer files)
plus ``srcal_judge.json`` (input format, prompt template, label token ids), and ``heldout_metrics.json``:
agreement with the labeller on non-tie held-out pairs, position consistency (same verdict with A and B
swapped), tie behaviour, agreement with the labeller's noise-free label where known, and that agreement on
the pairs of two policy candidates alone (``policy_agreement``, the number issue 13 asks for).

Deterministic by construction: a fixed number of steps (``rscorer.steps``; there is no wall-time cap), the
batches drawn from a seeded RNG and the schedule a function of the step, so the same seed, thread count
and library versions give the same judge however loaded the machine is.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from srcal.run.jsonl import read_jsonl, write_jsonl
from srcal.scorer import judge_format

log = logging.getLogger("srcal.scorer.train")

JUDGE_META = "srcal_judge.json"


# ---------------------------------------------------------------------------------------------------
# Reading the stage input
# ---------------------------------------------------------------------------------------------------
def load_pairs(data_dir: Path) -> tuple[list[dict], list[dict], dict[str, dict]]:
    data_dir = Path(data_dir)
    missing = [n for n in ("train.jsonl", "heldout.jsonl", "samples.jsonl") if not (data_dir / n).exists()]
    if missing:
        raise FileNotFoundError(f"rscorer_data input {data_dir} lacks {missing}: run stage rscorer-data first")
    samples = {s["id"]: s for s in read_jsonl(data_dir / "samples.jsonl")}
    return read_jsonl(data_dir / "train.jsonl"), read_jsonl(data_dir / "heldout.jsonl"), samples


def prompt_of(row: dict, sample: dict, recipe) -> str:
    ji = judge_format.judge_input(sample, row["response_a"], row["response_b"], recipe.rscorer.input_format,
                         recipe.rap_answer_prefix)
    return judge_format.render_prompt(recipe.rscorer.prompt_template, ji)


# ---------------------------------------------------------------------------------------------------
# Tokenizer and model for the tiny judge
# ---------------------------------------------------------------------------------------------------
def tokenizer_corpus(recipe) -> list[str]:
    """Every fact word and template marker, several times, so BPE merges each into one token."""
    sh = recipe.data.shapes
    words = judge_format.fact_vocabulary(sh.colors, sh.shapes, sh.grid, sh.max_value, sh.max_objects)
    template = recipe.rscorer.prompt_template
    literal = "".join(p for p in template.replace("}", "{").split("{")[::2])
    labels = " ".join(" " + lab for lab in judge_format.VERDICT_LABELS)
    return [literal + " " + " ".join(words[i::7]) + labels for i in range(7)] * 4


def build_tiny_judge(recipe, out_dir: Path):
    """Train the fact-language tokenizer and build the randomly initialised tiny Qwen2 judge; reloaded
    through ``AutoTokenizer`` (what vLLM uses), and checked: every fact word and label is one token."""
    from transformers import AutoTokenizer

    from srcal.models.tiny import build_qwen2_text, train_tokenizer

    rs = recipe.rscorer
    tok = train_tokenizer(tokenizer_corpus(recipe), rs.vocab_size)
    build_qwen2_text(tok, out_dir, hidden=rs.hidden, layers=rs.layers, heads=rs.heads,
                     intermediate=rs.intermediate, max_positions=rs.max_positions, seed=recipe.seed)
    tok = AutoTokenizer.from_pretrained(out_dir)
    sh = recipe.data.shapes
    split = [w for w in judge_format.fact_vocabulary(sh.colors, sh.shapes, sh.grid, sh.max_value, sh.max_objects)
             if len(tok(" " + w, add_special_tokens=False)["input_ids"]) != 1]
    if split:
        raise RuntimeError(f"{len(split)} fact words are not single tokens (e.g. {split[:5]}); raise "
                           f"rscorer.vocab_size (now {rs.vocab_size})")
    return tok


def label_token_ids(tok) -> dict[str, int]:
    """Token id of each verdict label as it follows the prompt (`` A``), checked to be one token."""
    ids = {}
    for lab in judge_format.VERDICT_LABELS:
        enc = tok(" " + lab, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise RuntimeError(f"verdict label {lab!r} is {len(enc)} tokens in the judge's tokenizer; "
                               "the judge must answer with one token")
        ids[lab] = enc[0]
    return ids


# ---------------------------------------------------------------------------------------------------
# Encoding rows with their auxiliary targets (aux trainer)
# ---------------------------------------------------------------------------------------------------
def _token_at(offsets: list[tuple[int, int]], char_end: int) -> int | None:
    """Index of the token whose span ends at ``char_end`` (the last token of a word)."""
    for i, (s, e) in enumerate(offsets):
        if e == char_end and e > s:
            return i
    return None


def _token_covering(offsets: list[tuple[int, int]], char: int) -> int | None:
    """Index of the token whose span contains character ``char``."""
    for i, (s, e) in enumerate(offsets):
        if s <= char < e:
            return i
    return None


def _word_ends(text: str, start: int) -> list[int]:
    """Absolute end offsets of the space-separated words of a field that starts at ``start``."""
    ends, pos = [], start
    for part in text.split(" "):
        pos += len(part)
        if part:
            ends.append(pos)
        pos += 1
    return ends


MARGIN_CLIP = 3


def quality_margin_class(row: dict) -> int:
    """The noise-free quality difference A − B as a class in 0..2·MARGIN_CLIP (``MARGIN_CLIP`` = equal), or
    -100 (ignored by the loss) when the row has no oracle qualities (real labellers give none)."""
    qa, qb = row.get("quality_a"), row.get("quality_b")
    if qa is None or qb is None:
        return -100
    return max(-MARGIN_CLIP, min(MARGIN_CLIP, round(qa - qb))) + MARGIN_CLIP


def encode_row(row: dict, sample: dict, recipe, tok, max_count: int, cache: dict | None = None) -> dict:
    """Token ids plus target positions for one ordered pair (see the module docstring). ``cache`` memoises
    canonical responses by (sample id, text): each response appears in many rows and both orders."""
    rs = recipe.rscorer
    cache = {} if cache is None else cache
    canons = {}
    for side in ("a", "b"):
        key = (sample["id"], row["response_" + side])
        if key not in cache:
            cache[key] = (judge_format.canonical_of(sample, key[1], rs.input_format, recipe.rap_answer_prefix)
                          if rs.input_format.startswith("facts") else None)
        canons[side] = cache[key]
    dropped: dict[str, set[int]] = {"a": set(), "b": set()}
    if rs.input_format == "facts+diff":
        canons["a"], canons["b"], dropped["a"], dropped["b"] = judge_format.pair_diff(canons["a"], canons["b"])
    if rs.input_format.startswith("facts"):
        d, q = judge_format.shared_fields(sample, rs.input_format)
        ji = judge_format.JudgeInput(d, q, canons["a"].text, canons["b"].text)
    else:
        ji = judge_format.judge_input(sample, row["response_a"], row["response_b"], rs.input_format, recipe.rap_answer_prefix)
    prompt, spans = judge_format.field_spans(rs.prompt_template, ji)
    enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    item: dict[str, Any] = {"ids": ids, "label": judge_format.VERDICT_LABELS.index(row["label"]),
                            "margin": quality_margin_class(row),
                            "tag_pos": [], "tag": [], "cnt_pos": [], "err": [], "true": [], "lm_pos": []}
    for side in ("a", "b"):
        field = "response_" + side
        s, e = spans[field]
        item["lm_pos"] += [i for i, (ts, te) in enumerate(offsets[:-1]) if ts >= s - 1 and te <= e]
        aux = row.get("aux_" + side)
        if not aux or not rs.input_format.startswith("facts"):
            continue
        canon = canons[side]
        ends = _word_ends(getattr(ji, field), s)
        truths = aux["claims_true"]
        for w, owner in enumerate(canon.claim_of_word):
            if owner >= 0 and owner < len(truths):
                p = _token_at(offsets, ends[w])
                if p is not None:
                    item["tag_pos"].append(p)
                    item["tag"].append(int(truths[owner]))
        p = _token_at(offsets, ends[canon.answer_word])
        if p is not None:
            item["tag_pos"].append(p)
            item["tag"].append(int(aux["correct"]))
        marker = f"Check {side.upper()}:"
        at = prompt.rfind(marker)
        if at >= 0:
            # the token holding the marker's colon: Qwen2's pre-tokenizer merges ":" with a following
            # newline (``Check A:\nB:``), so no token need end exactly at the colon
            p = _token_covering(offsets, at + len(marker) - 1)
            if p is not None:
                # counts over what the judge is shown: a claim dropped by the diff view leaves both
                gone = dropped[side]
                errors = aux["errors"] - sum(1 for c in gone if c < len(truths) and not truths[c])
                n_true = aux["n_true"] - sum(1 for c in gone if c < len(truths) and truths[c])
                item["cnt_pos"].append(p)
                item["err"].append(min(max(errors, 0), max_count - 1))
                item["true"].append(min(max(n_true, 0), max_count - 1))
    return item


# ---------------------------------------------------------------------------------------------------
# Held-out evaluation (shared by both trainers)
# ---------------------------------------------------------------------------------------------------
def read_verdicts(model, tok, prompts: list[str], label_ids: dict[str, int], batch_size: int = 64) -> list[list[float]]:
    """P(A), P(B), P(C) for each prompt: one forward, the last position's label logits, softmax."""
    from srcal.scorer.judge import last_position_probs

    return last_position_probs(model, tok, prompts, [label_ids[x] for x in judge_format.VERDICT_LABELS], batch_size)


def is_policy_pair(row: dict) -> bool:
    """Both responses of a held-out row are the policy's own search candidates (``model`` source)."""
    a, b = row.get("source_a"), row.get("source_b")
    if a is None and b is None and isinstance(row.get("source"), str) and "|" in row["source"]:
        a, b = row["source"].split("|", 1)
    return a == "model" and b == "model"


def heldout_metrics(rows: list[dict], probs: list[list[float]]) -> dict[str, Any]:
    """Agreement, position consistency and tie behaviour over held-out rows (pairs in both orders).

    * ``heldout_agreement``: argmax verdict == labeller's label, over rows whose label is not C;
    * ``position_consistency``: over pairs, the verdict read with A/B swapped is the swapped verdict;
    * ``tie_recall``: share of C-labelled rows judged C; ``mean_p_tie_on_ties`` / ``_on_non_ties``;
    * ``clean_agreement``: the same as agreement against the labeller's noise-free label (oracle only);
    * ``policy_agreement``: agreement with the clean label over rows whose *both* responses are the policy's
      own search candidates (``source_a == source_b == "model"``, scorer/data.py), both orders, clean label
      not a tie — the distribution the judge meets in every round, unlike teacher RAPs and their
      corruptions; ``policy_pairs`` / ``policy_rows`` count them (None / 0 when the held-out split has none).
    """
    pred = ["ABC"[max(range(3), key=lambda k: p[k])] for p in probs]
    nt = [(r, p) for r, p in zip(rows, pred) if r["label"] != "C"]
    clean = [(r, p) for r, p in zip(rows, pred) if r.get("clean_label") in ("A", "B")]
    ties = [(r, pr) for r, pr in zip(rows, probs) if r["label"] == "C"]
    by_pair: dict[str, dict[str, str]] = {}
    for r, p in zip(rows, pred):
        by_pair.setdefault(r["pair_id"], {})[r["order"]] = p
    both = [v for v in by_pair.values() if "ab" in v and "ba" in v]
    swap = {"A": "B", "B": "A", "C": "C"}
    policy = [(r, p) for r, p in zip(rows, pred) if is_policy_pair(r) and r.get("clean_label") in ("A", "B")]
    return {
        "policy_agreement": sum(r["clean_label"] == p for r, p in policy) / len(policy) if policy else None,
        "policy_pairs": len({r["pair_id"] for r, _ in policy}),
        "policy_rows": len(policy),
        "heldout_agreement": sum(r["label"] == p for r, p in nt) / max(1, len(nt)),
        "heldout_pairs": len(by_pair),
        "heldout_rows": len(rows),
        "heldout_non_tie_rows": len(nt),
        "position_consistency": sum(v["ab"] == swap[v["ba"]] for v in both) / max(1, len(both)),
        "clean_agreement": sum(r["clean_label"] == p for r, p in clean) / max(1, len(clean)),
        "accuracy_all": sum(r["label"] == p for r, p in zip(rows, pred)) / max(1, len(rows)),
        "tie_recall": sum(pr[2] == max(pr) for _, pr in ties) / max(1, len(ties)),
        "tie_rows": len(ties),
        "predicted_tie_share": sum(p == "C" for p in pred) / max(1, len(pred)),
        "mean_p_tie_on_ties": sum(pr[2] for _, pr in ties) / max(1, len(ties)),
        "mean_p_tie_on_non_ties": sum(pr[2] for (r, pr) in zip(rows, probs) if r["label"] != "C") / max(1, len(nt)),
    }


# ---------------------------------------------------------------------------------------------------
# The aux trainer
# ---------------------------------------------------------------------------------------------------
def _collate(items: list[dict], pad_id: int):
    import torch

    n = max(len(it["ids"]) for it in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(items), n), dtype=torch.long)
    for i, it in enumerate(items):
        ids[i, : len(it["ids"])] = torch.tensor(it["ids"])
        att[i, : len(it["ids"])] = 1
    return ids, att


def _gather(items: list[dict], pos_key: str, *val_keys: str):
    import torch

    b, p, vals = [], [], [[] for _ in val_keys]
    for i, it in enumerate(items):
        for j, pos in enumerate(it[pos_key]):
            b.append(i)
            p.append(pos)
            for v, k in zip(vals, val_keys):
                v.append(it[k][j])
    return torch.tensor(b, dtype=torch.long), torch.tensor(p, dtype=torch.long), [torch.tensor(v) for v in vals]


def lr_at(step: int, progress: float, base_lr: float, warmup: int, hold: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, the peak held until ``progress`` = ``hold``, then cosine to 0
    at ``progress`` = 1 (``progress`` ∈ [0, 1])."""
    decay = max(0.0, progress - hold) / max(1e-9, 1.0 - hold)
    return base_lr * min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, decay)))


def train_aux(recipe, model, tok, train_items: list[dict], label_ids: dict[str, int], log_every: int = 100):
    """The tiny judge's loop (module docstring): exactly ``rscorer.steps`` steps, the batches and the
    schedule a function of the seed and the step alone — never of wall time — so the same seed and library
    versions give the same judge on an idle and on a loaded machine. Returns a log."""
    import torch
    import torch.nn.functional as F

    rs = recipe.rscorer
    torch.manual_seed(recipe.seed)
    hidden = model.config.hidden_size
    tag_head = torch.nn.Linear(hidden, 2)
    err_head = torch.nn.Linear(hidden, rs.max_count)
    true_head = torch.nn.Linear(hidden, rs.max_count)
    margin_head = torch.nn.Linear(hidden, 2 * MARGIN_CLIP + 1)
    params = [*model.parameters(), *tag_head.parameters(), *err_head.parameters(), *true_head.parameters(),
              *margin_head.parameters()]
    opt = torch.optim.AdamW(params, lr=rs.lr, betas=(0.9, 0.98), weight_decay=rs.weight_decay)
    verdict_ids = torch.tensor([label_ids[x] for x in judge_format.VERDICT_LABELS])
    # pairs: both orders of a pair go into the same batch (swap augmentation within the step)
    by_pair: dict[str, list[dict]] = {}
    for it in train_items:
        by_pair.setdefault(it["pair_id"], []).append(it)
    pairs = list(by_pair.values())
    rng = random.Random(recipe.seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    model.train()
    t0, history, step = time.time(), [], 0
    while step < rs.steps:
        progress = step / rs.steps
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress, rs.lr, rs.warmup_steps, rs.lr_hold)
        items = [it for pr in rng.sample(pairs, min(rs.batch_size, len(pairs))) for it in pr]
        ids, att = _collate(items, pad)
        h = model.model(input_ids=ids, attention_mask=att).last_hidden_state
        rows = torch.arange(len(items))
        last = att.sum(1) - 1
        # full-vocabulary cross-entropy on the label token: the judge's unrestricted next token is its
        # verdict, so a client that generates text (not only one reading label log-probs) gets a label
        target = verdict_ids[torch.tensor([it["label"] for it in items])]
        loss_v = F.cross_entropy(model.lm_head(h[rows, last]), target)
        loss = loss_v
        parts = {"verdict": loss_v.item()}
        margin = torch.tensor([it["margin"] for it in items])
        if rs.margin_weight > 0 and bool((margin >= 0).any()):
            loss_m = F.cross_entropy(margin_head(h[rows, last]), margin, ignore_index=-100)
            loss = loss + rs.margin_weight * loss_m
            parts["margin"] = loss_m.item()
        b, p, (tag,) = _gather(items, "tag_pos", "tag")
        if len(b):
            loss_t = F.cross_entropy(tag_head(h[b, p]), tag)
            loss = loss + rs.aux_weight * loss_t
            parts["tags"] = loss_t.item()
        b, p, (err, tru) = _gather(items, "cnt_pos", "err", "true")
        if len(b):
            loss_c = F.cross_entropy(err_head(h[b, p]), err) + F.cross_entropy(true_head(h[b, p]), tru)
            loss = loss + rs.aux_weight * loss_c
            parts["counts"] = loss_c.item()
        if rs.lm_weight > 0:
            b, p, _ = _gather(items, "lm_pos")
            if len(b):
                nxt = ids[b, p + 1]
                loss_l = F.cross_entropy(model.lm_head(h[b, p]), nxt)
                loss = loss + rs.lm_weight * loss_l
                parts["lm"] = loss_l.item()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"rscorer: non-finite loss at step {step}: {parts}; lower rscorer.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, rs.grad_clip)
        opt.step()
        step += 1
        if step % log_every == 0 or step == 1:
            entry = {"step": step, "s": round(time.time() - t0, 1), "loss": round(loss.item(), 4),
                     **{k: round(v, 4) for k, v in parts.items()}}
            history.append(entry)
            log.info("rscorer step %s", entry)
    model.eval()
    return {"steps": step, "train_s": round(time.time() - t0, 2), "history": history}


# ---------------------------------------------------------------------------------------------------
# The TRL trainer
# ---------------------------------------------------------------------------------------------------
def train_trl(recipe, model, tok, train_rows: list[dict], samples: dict[str, dict], work: Path) -> dict:
    """TRL SFT with the loss on the verdict token (prompt/completion rows, completion-only loss)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rs = recipe.rscorer
    ds = Dataset.from_list([{"prompt": prompt_of(r, samples[r["sample_id"]], recipe), "completion": " " + r["label"]}
                            for r in train_rows])
    peft_config = None
    if rs.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=rs.lora.r, lora_alpha=rs.lora.alpha, lora_dropout=rs.lora.dropout,
                                 target_modules=rs.lora.target_modules, task_type="CAUSAL_LM")
    from srcal.models.loading import pick_device

    on_gpu = pick_device(recipe.device) != "cpu"  # the one device rule (recipe.device; auto = GPU if visible)
    args = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=rs.batch_size, max_steps=rs.steps,
                     learning_rate=rs.lr, lr_scheduler_type="cosine", warmup_steps=rs.warmup_steps,
                     weight_decay=rs.weight_decay, max_grad_norm=rs.grad_clip, logging_steps=max(1, rs.steps // 20),
                     report_to="none", save_strategy="no", max_length=rs.max_positions, completion_only_loss=True,
                     bf16=on_gpu and recipe.model.dtype == "bfloat16", use_cpu=not on_gpu,
                     gradient_checkpointing=False, seed=recipe.seed, dataloader_num_workers=0)
    t0 = time.time()
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    out = trainer.train()
    model = trainer.model
    if rs.use_lora:
        model = model.merge_and_unload()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"model": model, "steps": int(out.global_step), "train_s": round(time.time() - t0, 2),
            "history": trainer.state.log_history[-20:], "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None}


# ---------------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------------
def run_rscorer_train(recipe, inputs: dict[str, Path], out: Path, **_: Any) -> dict:
    """Stage ``rscorer-train``: input ``rscorer_data``; writes the judge model dir + ``heldout_metrics.json``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    rs = recipe.rscorer
    torch.set_num_threads(min(torch.get_num_threads(), rs.threads or torch.get_num_threads()))
    train_rows, held_rows, samples = load_pairs(inputs["rscorer_data"])
    out.mkdir(parents=True, exist_ok=True)
    if rs.base == "tiny":
        if not rs.input_format.startswith("facts") and rs.trainer == "aux":
            log.warning("rscorer: the aux trainer's dense targets need input_format 'facts'; training on "
                        "the verdict and LM loss only")
        tok = build_tiny_judge(recipe, out)
    else:
        tok = AutoTokenizer.from_pretrained(rs.base)
    model = AutoModelForCausalLM.from_pretrained(out if rs.base == "tiny" else rs.base, dtype=torch.float32)
    label_ids = label_token_ids(tok)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    t_build = time.time() - t0
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    if rs.trainer == "aux":
        items, cache = [], {}
        for r in train_rows:
            it = encode_row(r, samples[r["sample_id"]], recipe, tok, rs.max_count, cache)
            it["pair_id"] = r["pair_id"]
            items.append(it)
        log_ = train_aux(recipe, model, tok, items, label_ids)
    else:
        log_ = train_trl(recipe, model, tok, train_rows, samples, out)
        model = log_.pop("model")
    changed = sum(not torch.equal(before[k], v.detach()) for k, v in model.named_parameters() if k in before)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / JUDGE_META).write_text(json.dumps({
        "input_format": rs.input_format, "prompt_template": rs.prompt_template,
        "labels": list(judge_format.VERDICT_LABELS), "label_token_ids": label_ids, "base": rs.base,
        "answer_prefix": recipe.rap_answer_prefix}, indent=2))
    t1 = time.time()
    prompts = [prompt_of(r, samples[r["sample_id"]], recipe) for r in held_rows]
    probs = read_verdicts(model, tok, prompts, label_ids, rs.eval_batch_size)
    metrics = heldout_metrics(held_rows, probs)
    metrics.update({"train_steps": log_["steps"], "train_s": log_["train_s"], "trainer": rs.trainer,
                    "params": sum(p.numel() for p in model.parameters())})
    (out / "heldout_metrics.json").write_text(json.dumps(metrics, indent=2))
    write_jsonl(out / "heldout_predictions.jsonl",
                [{"pair_id": r["pair_id"], "order": r["order"], "label": r["label"],
                  "p_A": round(p[0], 5), "p_B": round(p[1], 5), "p_C": round(p[2], 5)} for r, p in zip(held_rows, probs)])
    (out / "train_log.json").write_text(json.dumps(log_, indent=2, default=str))
    log.info("rscorer: held-out agreement %.3f on %d pairs, position consistency %.3f (trained %d steps in %.0f s)",
             metrics["heldout_agreement"], metrics["heldout_pairs"], metrics["position_consistency"],
             log_["steps"], log_["train_s"])
    return {"counts": {"train_rows": len(train_rows), "heldout_rows": len(held_rows),
                       "params_changed": changed, "params": len(before)},
            "heldout": {k: metrics[k] for k in ("heldout_agreement", "heldout_pairs", "position_consistency",
                                                "clean_agreement", "tie_recall", "policy_agreement",
                                                "policy_pairs")},
            "timings_s": {"build": round(t_build, 2), "train": log_["train_s"], "eval": round(time.time() - t1, 2)}}
