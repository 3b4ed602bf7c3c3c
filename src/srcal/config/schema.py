"""The typed Recipe: the single source of truth for every hyperparameter.

A recipe is a YAML file (``recipes/<name>.yaml``, shipped inside the package) whose sections map one to
one onto the dataclasses below; :mod:`srcal.config.load` reads and validates it, :mod:`srcal.config.overrides`
applies ``--set`` keys. This module is only the schema (fields, defaults, help, bounds in the metadata), so
adding a hyperparameter touches this file alone.

Why dataclasses and not pydantic: the core package must import in milliseconds for ``srcal --help``
and for the KFP compile path, and the validation we need (types, Literal choices, ranges) is small.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

class RecipeError(ValueError):
    """A recipe that cannot be used. The message lists every problem, one per line, by dotted key."""


def _help(text: str, **kw: Any) -> Any:
    """A dataclass field whose metadata carries the help text shown by ``srcal recipe show``."""
    return field(metadata={"help": text, **kw.pop("meta", {})}, **kw)


# ----------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------


@dataclass
class ShapesWorldConfig:
    """The synthetic shapes world (docs/architecture.md). Only used when ``data.world == "shapes"``."""

    image_size: int = _help("Image side in pixels.", default=48, meta={"min": 16})
    grid: int = _help("Cells per side of the object grid (3 → 3×3 cells).", default=3, meta={"min": 2, "max": 6})
    max_objects: int = _help("Most objects in a perception/math scene.", default=4, meta={"min": 1})
    min_objects: int = _help(
        "Fewest objects in a perception/math scene; more objects make counting and 'where' harder.",
        default=1,
        meta={"min": 1},
    )
    math_chart_share: float = _help(
        "Share of math questions asked about bar charts (sums/differences) rather than objects (counts).",
        default=0.5,
        meta={"min": 0.0, "max": 1.0},
    )
    describe_empty_cells: bool = _help(
        "Judge's scene description also states each empty cell (describe_scene(include_empty=...)): "
        "longer input, but every cell claim has a same-cell sentence to compare with.",
        default=False,
    )
    colors: list[str] = _help(
        "Colour vocabulary.", default_factory=lambda: ["red", "green", "blue", "yellow"]
    )
    shapes: list[str] = _help("Shape vocabulary.", default_factory=lambda: ["circle", "square", "triangle"])
    max_bars: int = _help("Most bars in a chart image.", default=4, meta={"min": 2})
    max_value: int = _help("Largest bar value in a chart.", default=9, meta={"min": 2})


@dataclass
class DataSource:
    """One real VQA dataset read by an adapter from local/S3 parquet files (srcal.data.adapters)."""

    adapter: str = _help(
        "Adapter name.",
        default="chartqa",
        meta={"choices": ["chartqa", "aokvqa", "scienceqa", "ai2d", "mathvista", "mmstar"]},
    )
    path: str = _help("Parquet file, directory of parquet files, or s3:// prefix.", default="")
    name: str = _help(
        "Label written to each sample's `source` and prefixed to its id and image file (default: the adapter "
        "name); needed when two sources use the same adapter.",
        default="",
    )
    category: Literal["perception", "chart", "math"] = _help("Category this source feeds.", default="chart")
    split: Literal["pool", "eval"] = _help(
        "'pool' feeds the rft, calib and eval splits; 'eval' (e.g. a benchmark's test set) feeds only eval.",
        default="pool",
    )
    max_rows: int = _help("Cap on rows read (0 = all).", default=0, meta={"min": 0})


@dataclass
class DataConfig:
    world: Literal["shapes", "real"] = _help(
        "'shapes' generates the synthetic world; 'real' reads `sources` through the dataset adapters.",
        default="shapes",
    )
    rft_size: int = _help("RFT samples (paper: ~20K).", default=600, meta={"min": 1})
    calib_size: int = _help("Calibration samples per run (paper: 12K), disjoint from RFT.", default=240, meta={"min": 1})
    eval_size: int = _help("Held-out evaluation samples.", default=300, meta={"min": 1})
    base_train_size: int = _help(
        "Short-answer samples used to train the tiny base LVLM (shapes world only).", default=3000, meta={"min": 0}
    )
    category_ratio: list[float] = _help(
        "Mix over (perception, chart, math); the paper uses 2:1:1.", default_factory=lambda: [2.0, 1.0, 1.0]
    )
    max_rejected_share: float = _help(
        "Stop with an error when more than this share of input rows is malformed.",
        default=0.05,
        meta={"min": 0.0, "max": 1.0},
    )
    max_prompt_chars: int = _help(
        "Reject (quarantine, with the reason) a row whose prompt text — question and choices — is longer than "
        "this many characters, before anything is tokenized: one runaway row must not decide a batch's memory. "
        "Rows within it are still checked against the model's context in tokens. 0 = no character limit.",
        default=16000, meta={"min": 0})
    shapes: ShapesWorldConfig = field(default_factory=ShapesWorldConfig)
    sources: list[DataSource] = _help("Real dataset sources (world == 'real').", default_factory=list)


@dataclass
class TinyModelConfig:
    """Sizes of the tiny offline models (``srcal.models.tiny``)."""

    vision_hidden: int = _help("CLIP tower width.", default=64)
    vision_layers: int = _help("CLIP tower depth.", default=2)
    vision_heads: int = _help("Vision tower attention heads.", default=2, meta={"min": 1})
    patch_size: int = _help("CLIP patch size; image_size/patch_size squared = image tokens.", default=8)
    text_hidden: int = _help("LM width; head_dim = text_hidden/heads must be ≥ 64 for vLLM.", default=128)
    text_layers: int = _help("LM depth.", default=2)
    text_heads: int = _help("LM attention heads.", default=2)
    text_intermediate: int = _help("LM MLP width (0 = 2 × text_hidden).", default=0, meta={"min": 0})
    vocab_size: int = _help("Byte-level BPE vocabulary size.", default=600)
    corpus_samples: int = _help(
        "Shapes-world samples whose text (questions, RAPs, descriptions) trains the tokenizer.",
        default=1500, meta={"min": 1},
    )


@dataclass
class ModelConfig:
    family: Literal["", "llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3",
                    "internvl"] = _help(
        "Architecture family. '' (default) = read from the checkpoint's config.json model_type "
        "(srcal.models.capabilities); set it only to override that (a known architecture saved under another "
        "model_type), or to pick the tiny model's family with base 'tiny' ('' = llava).", default=""
    )
    base: str = _help(
        "HF model id, local dir or s3:// URI of the base LVLM; 'tiny' builds and trains the offline model.",
        default="tiny",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = _help("Weights dtype for training/inference.", default="float32")
    attn_implementation: str = _help("'sdpa' or 'eager' or 'flash_attention_2'.", default="sdpa")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class BaseTrainConfig:
    """Full fine-tune of the tiny LVLM on short answers: our stand-in for an instruction-tuned base."""

    steps: int = _help("Optimizer steps.", default=600, meta={"min": 0})
    batch_size: int = _help("Examples per device step.", default=32, meta={"min": 1})
    lr: float = _help("AdamW learning rate (the tiny base: 5e-4 learns, 2e-3 stalls).", default=5e-4, meta={"min": 0.0})
    warmup_ratio: float = _help("Share of steps with linear LR warm-up (then cosine decay).", default=0.05,
                                meta={"min": 0.0, "max": 1.0})
    weight_decay: float = _help("AdamW weight decay.", default=0.0, meta={"min": 0.0})
    max_grad_norm: float = _help("Gradient-norm clip.", default=1.0, meta={"min": 0.0})
    caption_share: float = _help(
        "Share of each batch that is captioning (scene description), as in LLaVA's alignment stage: dense "
        "supervision that teaches a from-scratch LM to read the image tokens; 0 = short answers only.",
        default=0.5, meta={"min": 0.0, "max": 1.0},
    )
    text_rows: int = _help(
        "Text-only rows added to each step's batch: language modelling on shapes-world text (the tokenizer's "
        "corpus: questions, rationales, descriptions, corruptions) — what a real LVLM's LLM was pre-trained "
        "on, like LLaVA-1.5's text-only instruction rows. Without them, words the base never outputs ('A', "
        "'Therefore', 'Answer') keep untrained output rows, and the frozen output layer caps their "
        "probability at ~0.03 whatever LoRA learns (docs/effect.md); 0 = none.", default=0, meta={"min": 0})
    caption_prompt: str = _help("The user text of captioning examples.", default="Describe the image.")
    caption_prompts: list[str] = _help(
        "More user texts for captioning examples, of other token lengths; each caption row takes one of "
        "caption_prompt + these at random (seeded). A base captioned under one prompt learns to find a cell "
        "by its distance from the generated token, so under a prompt of another length (a question) it "
        "describes the wrong cells (docs/effect.md); [] = caption_prompt only.", default_factory=list)
    cache: bool = _help(
        "Reuse a tiny base trained from the same inputs (the shipped one or the user cache; "
        "srcal.models.base_cache) instead of training it again.", default=True)


@dataclass
class TeacherConfig:
    kind: Literal["oracle", "openai", "dataset"] = _help(
        "'oracle' = shapes-world teacher; 'openai' = an OpenAI-compatible VLM endpoint; "
        "'dataset' = use rationales shipped with the dataset where present.",
        default="oracle",
    )
    url: str = _help("Base URL of the endpoint (…/v1).", default="")
    model: str = _help("Served model name.", default="")
    prompt: str = _help(
        "Prompt sent with the image and question; must ask for sentences then 'Answer: <answer>'.",
        default=(
            "Look at the image and answer the question. First explain your reasoning in a few short "
            "factual sentences about what is visible, then give the final line as 'Answer: <answer>'.\n"
            "Question: {question}"
        ),
    )
    concurrency: int = _help("Requests in flight.", default=8, meta={"min": 1})
    timeout_s: float = _help("Per-request timeout.", default=60.0, meta={"min": 0.1})
    retries: int = _help("Retries per request (with exponential backoff).", default=3, meta={"min": 0})
    min_kept_share: float = _help(
        "Fail the stage if fewer RAPs than this share pass the answer-match filter.",
        default=0.5,
        meta={"min": 0.0, "max": 1.0},
    )
    max_tokens: int = _help("Generation budget of one teacher reply.", default=512, meta={"min": 1})
    temperature: float = _help("Teacher sampling temperature (0 = greedy).", default=0.0, meta={"min": 0.0})
    use_dataset_rationales: bool = _help(
        "With kind 'openai': rows that ship a rationale/solution use it instead of calling the endpoint.",
        default=False,
    )
    cache_dir: str = _help(
        "Directory of the teacher-reply cache (JSONL per teacher identity); '' = $SRCAL_CACHE_DIR/teacher.",
        default="",
    )
    hallucination_rate: float = _help(
        "kind 'oracle': share of RAPs that open with one false claim about a part of the scene the answer "
        "does not depend on, like a real teacher VLM's unsupported claims (0 = a perfect teacher).",
        default=0.0,
        meta={"min": 0.0, "max": 1.0},
    )
    describe_first: bool = _help(
        "kind 'oracle': the RAP opens with the whole scene in the canonical caption form, then only the "
        "reasoning claims the description does not state (srcal.world.teacher.teacher_rap).", default=False)


@dataclass
class LoraConfig:
    r: int = _help("LoRA rank.", default=8, meta={"min": 1})
    alpha: int = _help("LoRA alpha (paper: 2×r).", default=16, meta={"min": 1})
    dropout: float = _help("LoRA dropout.", default=0.0, meta={"min": 0.0, "max": 1.0})
    target_modules: str = _help(
        "Regex of modules to adapt. Must stay inside the language model so vLLM can serve it (vLLM applies LoRA to the language model only).",
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    )


@dataclass
class RFTConfig:
    """Stage 1: rationale fine-tuning (LoRA SFT on rationale-answer pairs, plain-question prompts)."""

    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=32, alpha=64))
    lr: float = _help("Learning rate (paper: 1e-5).", default=1e-5, meta={"min": 0.0})
    epochs: float = _help("Passes over the training data.", default=1.0, meta={"min": 0.0})
    batch_size: int = _help("Examples per device step.", default=8, meta={"min": 1})
    grad_accum: int = _help("Gradient accumulation steps.", default=1, meta={"min": 1})
    max_length: int = _help("Max tokens per example (0 = no truncation).", default=0, meta={"min": 0})
    save_steps: int = _help("Checkpoint every N steps for resume (0 = end only).", default=50, meta={"min": 0})
    lr_scheduler: str = _help("transformers LR schedule.", default="cosine",
                              meta={"choices": ["linear", "cosine", "constant", "constant_with_warmup"]})
    warmup_ratio: float = _help("Share of steps with linear LR warm-up.", default=0.03, meta={"min": 0.0, "max": 1.0})
    max_grad_norm: float = _help("Gradient-norm clip.", default=1.0, meta={"min": 0.0})
    logging_steps: int = _help("Log loss every N steps (train_log.jsonl).", default=10, meta={"min": 1})
    gradient_checkpointing: bool = _help("Recompute activations to save memory (real models).", default=False)
    world_size: int = _help("Processes for accelerate/DeepSpeed (1 = plain).", default=1, meta={"min": 1})
    deepspeed: str = _help("DeepSpeed config file in the repo ('' = off).", default="")
    caption_share: float = _help(
        "Share of RFT rows that are captioning rows (base_train's caption prompts -> the scene description) on "
        "the RFT split's images, beside the RAP rows: keeps the base's captioning skill through RFT "
        "(shapes world only; 0 = RAP rows only, as in the paper).", default=0.0, meta={"min": 0.0, "max": 0.9})


@dataclass
class SearchConfig:
    """Stage 2: sentence-level beam search (CSR-style defaults)."""

    engine: Literal["hf", "vllm"] = _help("Generation engine.", default="hf")
    beams: int = _help("Beams kept per sample (B).", default=5, meta={"min": 1})
    expansions: int = _help("Sampled next sentences per beam per step (K).", default=2, meta={"min": 1})
    max_sentence_tokens: int = _help("Max new tokens per sentence (CSR: 70).", default=70, meta={"min": 1})
    max_sentences: int = _help("Max sentences per candidate.", default=8, meta={"min": 1})
    sentence_delimiters: list[str] = _help(
        "Stop strings ending a sentence.", default_factory=lambda: [".", "?", "!", "\n"]
    )
    temperature: float = _help("Sampling temperature for sentence expansions.", default=1.0, meta={"min": 0.0})
    top_p: float = _help("Nucleus sampling mass.", default=1.0, meta={"min": 0.0, "max": 1.0})
    min_p: float = _help(
        "Drop tokens less likely than min_p × the top token's probability before sampling (0 = off); cuts a "
        "fat tail of junk tokens without making confident steps less diverse.", default=0.0,
        meta={"min": 0.0, "max": 1.0})
    length_normalize: bool = _help("Score beams by mean instead of summed token log-prob.", default=True)
    keep_rule: Literal["top", "top_bottom"] = _help(
        "'top' keeps the B best; 'top_bottom' keeps the best and worst halves (CSR) for diverse pairs.",
        default="top_bottom",
    )
    n_candidates: int = _help("Final candidates per sample.", default=5, meta={"min": 2})
    fresh_per_round: bool = _help(
        "Round k of R searches only its own slice of the calibration split (every R-th sample from k−1: "
        "disjoint across rounds) with a round-dependent seed, so data.calib_size is the total over all "
        "rounds; false: every round searches the whole split with the same seed.", default=True)
    batch_size: int = _help("Samples searched in lockstep.", default=16, meta={"min": 1})
    shards: int = _help("Data shards for the pipeline's ParallelFor.", default=1, meta={"min": 1})
    engine_retries: int = _help(
        "Engine restarts per shard after a failure (e.g. the vLLM worker dying); each resumes after the "
        "last completed sample.", default=2, meta={"min": 0})
    vllm_max_model_len: int = _help("vLLM context length (0 = the model's own).", default=0, meta={"min": 0})
    vllm_gpu_memory_utilization: float = _help(
        "Share of GPU memory vLLM may take (GPU only).", default=0.85, meta={"min": 0.05, "max": 1.0})
    vllm_tensor_parallel: int = _help("vLLM tensor-parallel GPUs per shard.", default=1, meta={"min": 1})
    vllm_max_lora_rank: int = _help(
        "Smallest max_lora_rank vLLM starts with; the engine raises it to the policy adapter's rank "
        "(rounded up to a rank vLLM accepts).", default=64, meta={"min": 1})


@dataclass
class LabellerConfig:
    """Who labels R-Scorer training pairs: the shapes-world oracle judge, or an LLM endpoint."""

    kind: Literal["oracle", "openai"] = _help("Labeller.", default="oracle")
    url: str = _help("OpenAI-compatible endpoint (kind == 'openai').", default="")
    model: str = _help("Served model name.", default="")
    noise: float = _help("Oracle: probability a verdict is replaced by a uniform draw from A/B/C (so it changes with 2/3 of it).", default=0.05, meta={"min": 0.0, "max": 1.0})
    position_bias: float = _help(
        "Oracle: probability a verdict is replaced by A (a first-position bias, as LLM labellers show).", default=0.05, meta={"min": 0.0, "max": 1.0}
    )
    tie_margin: float = _help(
        "Oracle: quality difference at or below which the verdict is C (tie).", default=0.0, meta={"min": 0.0}
    )
    prompt: str = _help(
        "kind == 'openai': the labeller's chat prompt with {description} {question} {response_a} {response_b}; "
        "its verdict (A/B/C) is read from one token's log-probs.",
        default=(
            "You compare two answers to a question about an image, given a description of the image.\n"
            "Description: {description}\nQuestion: {question}\n\nResponse A:\n{response_a}\n\n"
            "Response B:\n{response_b}\n\nWhich response has the more accurate and complete rationale, "
            "with an answer that follows from it? Reply with one letter: A, B, or C if they are equally good."
        ),
    )
    concurrency: int = _help("kind == 'openai': requests in flight.", default=8, meta={"min": 1})
    timeout_s: float = _help("kind == 'openai': per-request timeout.", default=60.0, meta={"min": 0.1})
    retries: int = _help("kind == 'openai': retries per request (exponential backoff).", default=3, meta={"min": 0})


@dataclass
class RScorerConfig:
    """Stage 3: the R-Scorer judge: data, training, serving."""

    base: str = _help("Judge base: 'tiny' or an HF id/path (paper: Qwen2.5-1.5B class).", default="tiny")
    n_train_pairs: int = _help("Labelled pairs for training (before swap augmentation).", default=4000, meta={"min": 1})
    n_heldout_pairs: int = _help("Held-out labelled pairs for agreement metrics.", default=300, meta={"min": 1})
    prompt_template: str = _help(
        "Judge prompt; shared part (description, question) first for prefix caching.",
        default="Scene: {description}\nQuestion: {question}\nA: {response_a}\nB: {response_b}\nBetter:",
    )
    pairs_per_sample: int = _help(
        "Labelled pairs drawn per sample's response pool (more = fewer distinct scenes).", default=4, meta={"min": 1})
    policy_samples: int = _help(
        "RFT-split samples the RFT policy searches (step rscorer/search) for the judge's own-distribution pairs "
        "(model candidate vs model candidate): the judge must see what it judges in the rounds, and the RFT "
        "split is disjoint from calibration and eval. Part go to held-out pairs (rscorer.policy_agreement).",
        default=200, meta={"min": 1})
    double_corrupt: float = _help(
        "Share of corrupted responses corrupted a second time (wider spread of error counts).",
        default=0.3, meta={"min": 0.0, "max": 1.0})
    input_format: Literal["facts", "facts+ref", "facts+diff", "text"] = _help(
        "'facts': the shapes world's one-token-per-fact language (tiny judge, srcal.scorer.judge_format); 'facts+ref': the same, "
        "each claim followed by the description's entry on its subject (reference support), the question by its "
        "subject's entries; 'facts+diff': facts+ref without the claims both responses make (they cannot change "
        "the verdict; judge_format.pair_diff); 'text': fields verbatim (real judges).", default="text")
    trainer: Literal["aux", "trl"] = _help(
        "'aux': our loop with per-claim/count auxiliary targets (tiny judge from scratch); 'trl': TRL SFT with "
        "the loss on the verdict token (real judges).", default="trl")
    lr: float = _help("Peak learning rate (cosine schedule after warm-up).", default=5e-3, meta={"min": 0.0})
    steps: int = _help("Judge training steps.", default=2000, meta={"min": 0})
    batch_size: int = _help("Pairs per step (both orders each).", default=16, meta={"min": 1})
    warmup_steps: int = _help("Linear warm-up steps.", default=50, meta={"min": 0})
    lr_hold: float = _help(
        "Aux trainer: share of the steps held at the peak LR before the cosine decay. The tiny judge learns in "
        "stages (claim checks, then error counts, then the verdict that compares them); a plain cosine has "
        "decayed by the time the counts exist, so the verdict never learns (docs/effect.md).",
        default=0.0, meta={"min": 0.0, "max": 0.95})
    weight_decay: float = _help("AdamW weight decay.", default=0.01, meta={"min": 0.0})
    grad_clip: float = _help("Gradient-norm clip.", default=1.0, meta={"min": 0.0})
    aux_weight: float = _help("Aux trainer: weight of the claim-tag and count losses.", default=2.0, meta={"min": 0.0})
    lm_weight: float = _help("Aux trainer: weight of the language-model loss on the responses.", default=1.0,
                             meta={"min": 0.0})
    margin_weight: float = _help(
        "Aux trainer: weight of the quality-margin target at the verdict position — the labeller's noise-free "
        "quality difference of A and B (rounded, clipped to ±3: seven classes, a linear head). The verdict "
        "label alone is one noisy bit per pair; this tells the verdict position *how much* better one side is, "
        "from the same per-response quality the other aux targets decompose. Shapes world only (oracle labels).",
        default=0.0, meta={"min": 0.0})
    max_count: int = _help("Aux trainer: error / true-claim counts are clipped to max_count − 1.", default=8,
                           meta={"min": 2})
    vocab_size: int = _help("Tiny judge: BPE vocabulary cap (must fit every fact word as one token).",
                            default=3000, meta={"min": 300})
    hidden: int = _help("Tiny judge width; hidden/heads must be ≥ 32 for vLLM's CPU attention.", default=64,
                        meta={"min": 32})
    layers: int = _help("Tiny judge depth.", default=3, meta={"min": 1})
    heads: int = _help("Tiny judge attention heads.", default=2, meta={"min": 1})
    intermediate: int = _help("Tiny judge MLP width.", default=256, meta={"min": 8})
    max_positions: int = _help("Judge context length (tokens).", default=512, meta={"min": 64})
    eval_batch_size: int = _help("Held-out pairs per forward.", default=64, meta={"min": 1})
    threads: int = _help("torch threads for training (0 = torch default).", default=2, meta={"min": 0})
    use_lora: bool = _help("LoRA instead of full fine-tune (real recipes).", default=False)
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32, target_modules=r".*\.(q_proj|k_proj|v_proj|o_proj)"))
    serve: Literal["hf", "openai"] = _help(
        "'hf' = the score step loads the judge in-process; 'openai' = it asks an OpenAI-compatible server of the "
        "trained judge (vLLM, KServe) at `url`. In `srcal pipeline` the judge_serving parameter decides and sets "
        "both (kserve, in-step-vllm: openai + the server's URL; in-step: hf). `srcal run` with 'openai' and no "
        "`url` serves the judge it trained with vLLM's OpenAI server for each score step (a vLLM environment "
        "is checked before the first stage, srcal.preflight).", default="hf")
    url: str = _help(
        "Judge endpoint (…/v1) when serve == 'openai'; empty in the shipped real recipes, whose pipeline runs "
        "fill it in; `srcal run` then serves its own judge (see serve).", default="")
    served_model: str = _help("Model name the judge endpoint serves (vLLM --served-model-name).", default="judge")
    timeout_s: float = _help("Per-request timeout of the judge endpoint.", default=30.0, meta={"min": 0.1})
    retries: int = _help("Retries per judge request.", default=3, meta={"min": 0})
    concurrency: int = _help("Judge requests in flight.", default=8, meta={"min": 1})


@dataclass
class ScoreConfig:
    mode: Literal["pairwise", "independent"] = _help(
        "'pairwise' = all pairs in both orders (SRC); 'independent' = 1–10 per candidate (ablation).",
        default="pairwise",
    )
    schedule: Literal["all", "adjacent"] = _help(
        "Which pairs: 'all' N(N−1) ordered pairs, or a sparser ring for large N.", default="all"
    )
    batch_size: int = _help("Judge reads per forward.", default=64, meta={"min": 1})
    max_pairs_per_sample: int = _help(
        "Cap on ordered pairs judged per sample under 'all' (0 = no cap); beyond it 'adjacent' is used.",
        default=0, meta={"min": 0})
    independent_prompt: str = _help(
        "mode == 'independent': prompt with {description} {question} {response}; the score 1–10 is the "
        "expectation over the number tokens' probabilities.",
        default="Description: {description}\nQuestion: {question}\nResponse: {response}\nScore (1-10):")
    commit_every: int = _help("Samples judged between appends to judgments.jsonl (resume granularity).",
                              default=8, meta={"min": 1})


@dataclass
class CurateConfig:
    aggregation: Literal["weighted", "uniform", "bradley_terry"] = _help(
        "Per-candidate score: confidence-weighted mean win prob (SRC), plain mean (ablation), or BT.",
        default="weighted",
    )
    min_margin: float = _help("Drop samples whose P(best ≻ worst) − 0.5 is below this.", default=0.1, meta={"min": 0.0, "max": 0.5})
    min_confidence: float = _help("Drop samples whose mean pair confidence is below this.", default=0.1, meta={"min": 0.0, "max": 1.0})
    chosen_pool: Literal["all", "correct"] = _help(
        "'all': chosen = the judge's best candidate (paper); 'correct': the judge's best among candidates "
        "with the right answer (ground truth known), so a wrong best drops no sample.",
        default="all",
    )
    judge: Literal["rscorer", "oracle"] = _help(
        "Who ranks the candidates: 'rscorer' (SRC: the judge's pairwise verdicts) or 'oracle' (ablation, "
        "shapes world only: the oracle's rationale factuality, the upper bound a judge can approach).",
        default="rscorer")
    chosen_rap_format: bool = _help(
        "Only a candidate in clean RAP form (rationale, then the answer line) may be chosen, so DPO does "
        "not teach the policy to drop the format.", default=False)
    require_correct: bool = _help("Drop samples whose chosen answer is wrong (ground truth known).", default=True)
    min_pairs: int = _help("Stop the round with an error if fewer pairs survive.", default=8, meta={"min": 1})


@dataclass
class AlignConfig:
    """Stage 4b: DPO + SFT term (RPO style), TRL loss_type=['sigmoid','sft']."""

    beta: float = _help("DPO β (paper: 0.1).", default=0.1, meta={"min": 0.0})
    sft_weight: float = _help("Weight of the SFT term on the chosen answer (paper: 0.02).", default=0.02, meta={"min": 0.0})
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=256, alpha=512))
    lr: float = _help("Learning rate (paper: 5e-7).", default=5e-7, meta={"min": 0.0})
    epochs: float = _help("Passes over the training data.", default=1.0, meta={"min": 0.0})
    batch_size: int = _help("Examples per device step.", default=8, meta={"min": 1})
    grad_accum: int = _help("Gradient accumulation steps.", default=1, meta={"min": 1})
    save_steps: int = _help("Checkpoint every N steps for resume (0 = end only).", default=50, meta={"min": 0})
    world_size: int = _help("Processes for accelerate/DeepSpeed.", default=1, meta={"min": 1})
    deepspeed: str = _help("DeepSpeed config file ('' = off).", default="")


@dataclass
class EvalConfig:
    batch_size: int = _help("Examples per device step.", default=32, meta={"min": 1})
    max_new_tokens: int = _help("Generation budget per eval answer.", default=160, meta={"min": 1})


@dataclass
class Recipe:
    name: str = _help("Recipe name (recorded in metrics.json).", default="tiny")
    seed: int = _help("Master seed; every stage derives its own from it.", default=0)
    rounds: int = _help("SRC rounds of search → score → curate → align (paper: 3).", default=3, meta={"min": 1})
    device: Literal["auto", "cpu", "cuda"] = _help("Where models run.", default="auto")
    rap_answer_prefix: str = _help("The line that carries the answer in a rationale-answer pair.", default="Answer:")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    base_train: BaseTrainConfig = field(default_factory=BaseTrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    rft: RFTConfig = field(default_factory=RFTConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    labeller: LabellerConfig = field(default_factory=LabellerConfig)
    rscorer: RScorerConfig = field(default_factory=RScorerConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- helpers ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """Content hash of the named sections (all when none): the resume key of a stage's outputs."""
        d = self.to_dict()
        picked = {s: d[s] for s in sections} if sections else d
        blob = json.dumps(picked, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def describe(cls: type = Recipe, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every field: what ``srcal recipe keys`` prints."""
    rows = []
    inst = cls()
    for f in dataclasses.fields(cls):
        val = getattr(inst, f.name)
        if dataclasses.is_dataclass(val):
            rows += describe(type(val), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", val, str(f.metadata.get("help", ""))))
    return rows
