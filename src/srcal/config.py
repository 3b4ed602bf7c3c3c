"""The typed Recipe: the single source of truth for every hyperparameter.

A recipe is a YAML file (``recipes/<name>.yaml``, shipped inside the package) whose sections map one to
one onto the dataclasses below. ``load_recipe(name_or_path, overrides=["align.beta=0.2", ...])`` reads
it, applies dotted overrides, and validates: every problem (unknown key, wrong type, value outside the
allowed set or range) is collected and reported at once, each naming the dotted key, as torchtune's
``config/_validate.py`` does.

Why dataclasses and not pydantic: the core package must import in milliseconds for ``srcal --help``
and for the KFP compile path, and the validation we need (types, Literal choices, ranges) is small.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RECIPES_DIR = Path(__file__).parent / "recipes"


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
        "reasoning claims the description does not state (srcal.data.oracle.teacher_rap).", default=False)


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
    input_format: Literal["facts", "facts+ref", "text"] = _help(
        "'facts': the shapes world's one-token-per-fact language (tiny judge, srcal.scorer.judge_format); 'facts+ref': the same, "
        "each claim followed by the description's entry on its subject (reference support); 'text': fields "
        "verbatim (real judges).", default="text")
    trainer: Literal["aux", "trl"] = _help(
        "'aux': our loop with per-claim/count auxiliary targets (tiny judge from scratch); 'trl': TRL SFT with "
        "the loss on the verdict token (real judges).", default="trl")
    lr: float = _help("Peak learning rate (cosine schedule after warm-up).", default=5e-3, meta={"min": 0.0})
    steps: int = _help("Judge training steps.", default=2000, meta={"min": 0})
    batch_size: int = _help("Pairs per step (both orders each).", default=16, meta={"min": 1})
    warmup_steps: int = _help("Linear warm-up steps.", default=50, meta={"min": 0})
    weight_decay: float = _help("AdamW weight decay.", default=0.01, meta={"min": 0.0})
    grad_clip: float = _help("Gradient-norm clip.", default=1.0, meta={"min": 0.0})
    aux_weight: float = _help("Aux trainer: weight of the claim-tag and count losses.", default=2.0, meta={"min": 0.0})
    lm_weight: float = _help("Aux trainer: weight of the language-model loss on the responses.", default=1.0,
                             meta={"min": 0.0})
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
        "both (kserve, in-step-vllm: openai + the server's URL; in-step: hf). `srcal run` starts no judge server: "
        "with 'openai' it needs `url` (a judge trained before, e.g. the --from run's), checked before the first "
        "stage (srcal.preflight).", default="hf")
    url: str = _help(
        "Judge endpoint (…/v1) when serve == 'openai'; empty in the shipped real recipes, whose pipeline runs "
        "fill it in. `srcal run` refuses to start with serve 'openai' and no url.", default="")
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


# ----------------------------------------------------------------------------------------------------
# Loading, overrides, validation
# ----------------------------------------------------------------------------------------------------


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = RECIPES_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise RecipeError(
        f"recipe {name_or_path!r} not found: not a YAML file and not one of the shipped recipes "
        f"{available_recipes()} (in {RECIPES_DIR})"
    )


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (so `--set rounds=1` gives an int); a value YAML cannot
    read (``[``, ``*a``, ``'``, control characters) is a :class:`RecipeError`, not a parser traceback."""
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int past Python's 4,300-digit limit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"override value {text!r:.60} is not valid YAML ({first}); quote a string value, "
                          f"e.g. --set 'key=\"{text[:20]}\"'") from None


def _key_parts(dotted: str, key: str) -> list[str | int]:
    """``data.sources.0.path`` or ``data.sources[0].path`` → ``["data", "sources", 0, "path"]``."""
    import re

    parts: list[str | int] = []
    for chunk in key.strip().split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\s*-?\d+\s*\])*)", chunk)
        if m is None or (not m.group(1) and not m.group(2)):
            raise RecipeError(f"override {dotted!r}: cannot read the key {key.strip()!r}; write a dotted key "
                              "like align.beta or data.sources.0.path")
        name, brackets = m.groups()
        if name:
            parts.append(int(name) if re.fullmatch(r"-?\d+", name) else name)
        parts += [int(i) for i in re.findall(r"-?\d+", brackets)]
    return parts


def _schema_child(tp: Any, part: str | int) -> Any:
    """The type at ``part`` below type ``tp`` (a Recipe dataclass or ``list[...]``), or None when unknown."""
    if isinstance(part, int):
        args = typing.get_args(tp) if typing.get_origin(tp) is list else ()
        return args[0] if args else None
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(part)
    return None


def _schema_default(parent_tp: Any, name: str) -> Any:
    """The default of field ``name`` of dataclass ``parent_tp`` (a fresh copy), or None."""
    if not dataclasses.is_dataclass(parent_tp):
        return None
    for f in dataclasses.fields(parent_tp):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return None if f.default is dataclasses.MISSING else f.default
    return None


def _list_default(dotted: str, parts: list[str | int], parent_tp: Any) -> list:
    """What an indexed list the recipe does not set starts from: the field's default, as plain data."""
    name = str(parts[-1])
    if dataclasses.is_dataclass(parent_tp) and name not in {f.name for f in dataclasses.fields(parent_tp)}:
        fields = [f.name for f in dataclasses.fields(parent_tp)]
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"override {dotted!r}: {_show(parts)}: unknown key{hint}; allowed: {sorted(fields)}")
    default = _schema_default(parent_tp, name)
    if not isinstance(default, list):
        raise RecipeError(f"override {dotted!r}: {_show(parts)} is not a list, so it has no numbered entries")
    return [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x for x in default]


def _show(parts: list[str | int]) -> str:
    """A key path as the validation messages write it: ``data.sources[0].path``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def apply_override(raw: dict[str, Any], dotted: str) -> None:
    """Apply ``a.b.c=value`` to a nested dict, creating intermediate dicts (validated later).

    A number in the key indexes a list: ``data.sources.0.path=s3://bucket/x/`` (or ``data.sources[0].path``)
    changes one source without restating the list. A list the recipe does not set starts from the field's
    default (``data.category_ratio.0=3``). The value is parsed as YAML (``=3`` an int, ``={a: 1}`` a mapping)
    and validated with the rest of the recipe, so a wrong type is reported by its full key.
    """
    if "=" not in dotted:
        raise RecipeError(f"override {dotted!r}: expected key=value, e.g. align.beta=0.2")
    key, value = dotted.split("=", 1)
    parts = _key_parts(dotted, key)
    node: Any = raw
    tp: Any = Recipe
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not isinstance(part, int):
                raise RecipeError(f"override {dotted!r}: {_show(parts[:i])} is a list; index it with a number")
            node = node[_index(dotted, parts, i, node)]
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"override {dotted!r}: {_show(parts[:i + 1])} is a single value, not a section")
        else:
            name = str(part)
            if isinstance(nxt, int) and node.get(name) is None:
                node[name] = _list_default(dotted, parts[:i + 1], tp)
            node = node.setdefault(name, {})
            if isinstance(nxt, int) and not isinstance(node, list):
                raise RecipeError(f"override {dotted!r}: {_show(parts[:i + 1])} is not a list, so it has no "
                                  f"entry {nxt}")
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"override {dotted!r}: {part!r} is not a section")
        tp = _schema_child(tp, part)
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int):
            raise RecipeError(f"override {dotted!r}: {_show(parts[:-1])} is a list; index it with a number")
        node[_index(dotted, parts, len(parts) - 1, node)] = _parse_scalar(value)
    else:
        node[str(last)] = _parse_scalar(value)


def _index(dotted: str, parts: list[str | int], i: int, items: list) -> int:
    """``parts[i]`` as a valid index into ``items``, else an error that names the list and its length."""
    idx = parts[i]
    assert isinstance(idx, int)
    if not -len(items) <= idx < len(items):
        have = f"indices 0–{len(items) - 1}" if items else "none"
        raise RecipeError(f"override {dotted!r}: index {idx} is out of range: {_show(parts[:i])} has "
                          f"{len(items)} entr{'y' if len(items) == 1 else 'ies'} ({have})")
    return idx


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _build(cls: type, raw: Any, path: str, errors: list[str]) -> Any:
    """Build dataclass ``cls`` from ``raw``, appending every problem found to ``errors``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{path or '<root>'}: expected a mapping, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{path}{key}: unknown key{hint}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        tp, value, dotted = hints[name], raw[name], f"{path}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, dotted + ".", errors)
            continue
        if typing.get_origin(tp) is list and typing.get_args(tp) and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            inner = typing.get_args(tp)[0]
            if not isinstance(value, list):
                errors.append(f"{dotted}: expected a list of mappings")
                continue
            kwargs[name] = [_build(inner, v, f"{dotted}[{i}].", errors) for i, v in enumerate(value)]
            continue
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tp is float and isinstance(value, str):  # YAML 1.1 reads `5e-7` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            if typing.get_origin(tp) is Literal:
                errors.append(f"{dotted}: {value!r} is not allowed; choose one of {list(typing.get_args(tp))}")
            else:
                errors.append(f"{dotted}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
            continue
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            errors.append(f"{dotted}: {value!r} is not allowed; choose one of {meta['choices']}")
        if "min" in meta and isinstance(value, (int, float)) and value < meta["min"]:
            errors.append(f"{dotted}: {value!r} is below the minimum {meta['min']}")
        if "max" in meta and isinstance(value, (int, float)) and value > meta["max"]:
            errors.append(f"{dotted}: {value!r} is above the maximum {meta['max']}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - defensive, fields are checked above
        errors.append(f"{path}: {e}")
        return cls()


def _cross_checks(r: Recipe) -> list[str]:
    """Rules that span fields."""
    errs = []
    if len(r.data.category_ratio) != 3 or any(x < 0 for x in r.data.category_ratio) or sum(r.data.category_ratio) <= 0:
        errs.append("data.category_ratio: expected three non-negative weights (perception, chart, math)")
    if r.data.world == "real" and not r.data.sources:
        errs.append("data.sources: world 'real' needs at least one source")
    if r.search.n_candidates > r.search.beams * r.search.expansions:
        errs.append("search.n_candidates: cannot exceed search.beams × search.expansions")
    if r.teacher.kind == "openai" and not r.teacher.url:
        errs.append("teacher.url: required when teacher.kind is 'openai'")
    if r.labeller.kind == "openai" and not r.labeller.url:
        errs.append("labeller.url: required when labeller.kind is 'openai'")
    if r.curate.judge == "oracle" and r.data.world != "shapes":
        errs.append("curate.judge: 'oracle' needs the shapes world's oracle (data.world: shapes); real data "
                    "has no oracle, use 'rscorer'")
    if r.model.base == "tiny" and r.data.world != "shapes":
        errs.append("model.base: 'tiny' only knows the shapes world; set data.world=shapes or a real model")
    return errs


# Keys that recipes once had: setting one is an error that names what replaced it (not "unknown key").
REMOVED_KEYS: dict[str, str] = {
    "rscorer.max_train_s": "rscorer.steps — the judge trains a fixed number of steps; a wall-time cap made "
                           "the judge, and every number after it, depend on machine load (issue 13)",
}


def _removed(raw: dict[str, Any]) -> list[str]:
    errs = []
    for dotted, repl in REMOVED_KEYS.items():
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            errs.append(f"{dotted}: removed; use {repl}")
    return errs


_MISSING = object()


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    errors: list[str] = _removed(raw)
    if errors:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(errors))
    recipe = _build(Recipe, raw, "", errors)
    if not errors:
        errors += _cross_checks(recipe)
    if errors:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(errors))
    return recipe


def load_recipe(name_or_path: str = "tiny", overrides: list[str] | None = None) -> Recipe:
    """Load a shipped recipe by name or a YAML path, apply ``key=value`` overrides, validate."""
    import yaml

    path = _resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    for ov in overrides or []:
        apply_override(raw, ov)
    try:
        return recipe_from_dict(raw)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None


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
