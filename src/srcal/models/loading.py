"""Loading LVLMs and policies, LoRA setup, and the model-artifact layout (docs/architecture.md).

A **base** artifact is either a Hugging Face model directory (the tiny recipe trains one) or a directory
holding only ``srcal_model.json`` = ``{"family": ..., "base": "<hub id | local dir | s3://…>"}`` (real
recipes: the weights are not copied into every run).

A **model artifact** (output of ``rft`` and ``align``) is a directory with this stage's LoRA
(``adapter_model.safetensors`` + ``adapter_config.json``), the earlier adapters under ``stack/NN-<name>/``,
the processor files, and ``srcal_model.json`` = ``{"family", "stack": ["00-rft", ...], "name"}``. Each
adapter was trained on the base with every earlier adapter merged, so :func:`load_policy` merges them in
that order and then the top one. Each round's LoRA is fresh on the merged previous policy; with the adapter
disabled that model *is* the previous policy, which is why TRL's implicit reference (adapter off) is the
right DPO reference for rounds 2 and 3 (SRC §3.4: each round starts from the previous round's model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from srcal.models.capabilities import CAPABILITIES, UnsupportedArchitecture, for_model_dir, outside_lm_probes

META_FILE = "srcal_model.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# transformers model_type -> our family name (ModelConfig.family); the table is srcal.models.capabilities
FAMILIES = {c.model_type: c.family for c in CAPABILITIES.values()}


class ModelArtifactError(RuntimeError):
    """A model directory that does not follow the artifact contract; the message says what is missing."""


# ------------------------------------------------------------------------------------------- metadata


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """``srcal_model.json`` of an artifact, or ``{}`` for a plain HF model directory."""
    p = Path(model_dir) / META_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def write_meta(model_dir: str | Path, meta: dict[str, Any]) -> None:
    Path(model_dir, META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def write_base_pointer(out: str | Path, base: str, family: str) -> Path:
    """A base artifact for real recipes: a pointer to a hub id / local dir / s3:// URI, not a weights copy."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_meta(out, {"family": family, "base": base, "name": "base", "stack": []})
    return out


def resolve_base(base_dir: str | Path) -> str:
    """Where the base weights are: the directory itself, or what its ``srcal_model.json`` points at.

    An ``s3://`` pointer is materialised into the local cache first (``srcal.run.store``).
    """
    target = read_meta(base_dir).get("base")
    if not target:
        return str(base_dir)
    if str(target).startswith("s3://"):
        from srcal.run import store

        return str(store.materialize(target))
    return str(target)


def family_of(model_path: str | Path) -> str:
    """Our family name for a model directory or hub id, from its config's ``model_type``."""
    try:
        return for_model_dir(model_path).family
    except UnsupportedArchitecture as e:
        raise ModelArtifactError(str(e)) from None


# ---------------------------------------------------------------------------------------------- loading


def _torch_dtype(dtype: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def pick_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# Processors whose released AutoProcessor also builds a video processor, which needs torchvision
# (capabilities: image_only_processor) -> model_type.
QWEN_VL_PROCESSORS = {c.processor_class: c.model_type for c in CAPABILITIES.values() if c.image_only_processor}
_IMAGE_ONLY: dict[str, type] = {}


def image_only_processor_cls(processor_class: str):
    """``processor_class`` (a Qwen-VL or LLaVA-OneVision processor) without its video processor.

    Why: the released Qwen2-VL/Qwen2.5-VL/Qwen3-VL and LLaVA-OneVision checkpoints' ``AutoProcessor``
    builds a video processor (``Qwen2VLVideoProcessor``, ``LlavaOnevisionVideoProcessor``), which needs
    torchvision, and PyPI has no torchvision that works beside our CPU torch
    (the GPU training image does carry torchvision). srcal only feeds
    images, so the processor is assembled from the checkpoint's image processor, tokenizer, chat template
    and processor settings. The class keeps the released name, so ``save_pretrained`` writes the same
    ``processor_class`` and the saved directory loads with the full processor where torchvision exists.
    """
    if processor_class not in _IMAGE_ONLY:
        import transformers
        from transformers.processing_utils import ProcessorMixin

        base = getattr(transformers, processor_class)

        if processor_class == "LlavaOnevisionProcessor":
            # named like the released __init__'s settings: from_pretrained passes only the names it sees
            def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                         vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                         video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
                base.__init__(self, image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                              vision_feature_select_strategy=vision_feature_select_strategy,
                              chat_template=chat_template, image_token=image_token, video_token=video_token,
                              vision_aspect_ratio=vision_aspect_ratio)
        else:
            def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
                # the Qwen-VL processors' own token logic, minus the video processor
                self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
                self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
                self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
                self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
                ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

        cls = type(processor_class, (base,), {"__init__": __init__, "__module__": __name__,
                                               "__doc__": f"{processor_class} without the video processor "
                                                          "(srcal.models.loading.image_only_processor_cls)."})
        _IMAGE_ONLY[processor_class] = cls
    return _IMAGE_ONLY[processor_class]


def saved_processor_class(model_dir: str | Path) -> str:
    """The ``processor_class`` a model directory declares (processor, preprocessor or tokenizer config)."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        f = Path(model_dir) / name
        if f.exists():
            cls = json.loads(f.read_text()).get("processor_class")
            if cls:
                return cls
    return ""


def load_processor(model_path: str | Path):
    """The processor of a model dir / hub id, as ``AutoProcessor`` would build it, with two exceptions.

    * A Qwen-VL or LLaVA-OneVision checkpoint on a machine without torchvision gets the image-only processor
      (:func:`image_only_processor_cls`) instead of failing with "Qwen2VLVideoProcessor requires the
      Torchvision library".
    * The tiny recipe's Qwen2-VL folders (saved as ``Qwen2VLImageOnlyProcessor``, srcal.models.tiny):
      ``AutoProcessor`` would silently return the bare tokenizer there.
    """
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    local = Path(str(model_path)).is_dir()
    name = saved_processor_class(model_path) if local else ""
    if name == "Qwen2VLImageOnlyProcessor":
        from srcal.models.tiny import load_tiny_processor

        return load_tiny_processor(model_path)
    if name in QWEN_VL_PROCESSORS and not is_torchvision_available():
        return image_only_processor_cls(name).from_pretrained(str(model_path))
    try:
        return AutoProcessor.from_pretrained(str(model_path))
    except ImportError as e:  # a hub id (no local config to read first) of such a model
        if "Torchvision" not in str(e):
            raise
        from transformers import AutoConfig

        mt = AutoConfig.from_pretrained(str(model_path)).model_type
        by_type = {v: k for k, v in QWEN_VL_PROCESSORS.items()}
        if mt not in by_type:
            raise
        return image_only_processor_cls(by_type[mt]).from_pretrained(str(model_path))


def load_lvlm(path: str | Path, *, dtype: str = "float32", device: str = "cpu",
              attn_implementation: str | None = None):
    """Load an image-text-to-text model and its processor from a dir, hub id or base pointer artifact.

    Returns ``(model, processor)`` with the model in eval mode on ``device``. ``trust_remote_code`` stays
    off (no code from a checkpoint runs). The processor's tokenizer pads on the left, as batched generation needs.
    """
    from transformers import AutoModelForImageTextToText

    src = resolve_base(path) if Path(str(path)).is_dir() else str(path)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(src, **kwargs).to(pick_device(device))
    model.eval()
    proc = load_processor(src)
    proc.tokenizer.padding_side = "left"
    return model, proc


def merge_adapter(model, adapter_dir: str | Path):
    """Merge one saved LoRA adapter into ``model``'s weights and return the plain model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def has_adapter(model_dir: str | Path) -> bool:
    return all((Path(model_dir) / f).exists() for f in ADAPTER_FILES)


def load_policy(base_dir: str | Path, policy_dir: str | Path | None = None, *, dtype: str = "float32",
                device: str = "cpu", attn_implementation: str | None = None, merge_top: bool = True):
    """The policy of a model artifact: base, then every stacked adapter merged in order, then the top one.

    With ``policy_dir=None`` (or a base artifact) this is the base LVLM. With ``merge_top=False`` the top
    adapter is left as a PEFT adapter (e.g. to keep training it). Returns ``(model, processor)``; the
    processor is the artifact's own copy when it has one (so tokens and image sizes match training).
    """
    model, proc = load_lvlm(base_dir, dtype=dtype, device=device, attn_implementation=attn_implementation)
    if policy_dir is None:
        return model, proc
    policy_dir = Path(policy_dir)
    meta = read_meta(policy_dir)
    for name in meta.get("stack", []):
        sub = policy_dir / "stack" / name
        if not has_adapter(sub):
            raise ModelArtifactError(f"{policy_dir}: stacked adapter {name!r} missing at {sub} ({ADAPTER_FILES})")
        model = merge_adapter(model, sub)
    if has_adapter(policy_dir):
        if merge_top:
            model = merge_adapter(model, policy_dir)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(policy_dir), is_trainable=True)
    elif meta.get("stack"):
        raise ModelArtifactError(f"{policy_dir}: has a stack but no top adapter ({ADAPTER_FILES})")
    if (policy_dir / "tokenizer_config.json").exists() or (policy_dir / "processor_config.json").exists():
        proc = load_processor(policy_dir)
        proc.tokenizer.padding_side = "left"
    model.eval()
    return model, proc


def load_model_any(model_dir: str | Path, base_dir: str | Path, **kw):
    """Load what an ``eval`` input names: a model artifact (adapters over ``base_dir``) or a base artifact."""
    if has_adapter(model_dir) or read_meta(model_dir).get("stack"):
        return load_policy(base_dir, model_dir, **kw)
    return load_lvlm(model_dir, **kw)


# ------------------------------------------------------------------------------------------------- LoRA


def lora_config(lora, *, task_type: str = "CAUSAL_LM"):
    """PEFT ``LoraConfig`` from a recipe ``LoraConfig`` section (r, alpha, dropout, target_modules regex).

    The regex must stay inside the language model: vLLM serves LoRA on the LM only, and an adapter on the
    vision tower can be silently ignored there. TRL also refuses LoRA
    on ``lm_head``. Both are checked here, so a bad recipe fails before any training.
    """
    import re

    from peft import LoraConfig as PeftLoraConfig

    pattern = lora.target_modules
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"lora.target_modules: {pattern!r} is not a valid regex: {e}") from None
    for probe in (*outside_lm_probes(), "lm_head"):  # every known architecture's vision tower and projector
        if rx.fullmatch(probe):
            raise ValueError(f"lora.target_modules: {pattern!r} matches {probe!r}; keep LoRA inside the "
                             "language model (e.g. '.*language_model.*\\.(q_proj|v_proj)')")
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=pattern,
                          bias="none", task_type=task_type)


# ----------------------------------------------------------------------------------------- artifacts


def new_model_artifact(out: str | Path, parent_policy_dir: str | Path | None, name: str,
                       family: str | None = None) -> dict[str, Any]:
    """Start the model artifact ``out`` for a stage that trains a fresh LoRA on top of ``parent_policy_dir``.

    The parent's stack is copied, and the parent's own top adapter is appended to it as
    ``stack/NN-<parent name>/``, so ``load_policy(base, out)`` reproduces the parent before applying the new
    adapter. With ``parent_policy_dir=None`` (RFT from the base) the stack is empty. Writes and returns the
    new ``srcal_model.json``; the caller then saves its adapter and processor into ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stack: list[str] = []
    if parent_policy_dir is not None:
        parent = Path(parent_policy_dir)
        pmeta = read_meta(parent)
        family = family or pmeta.get("family")
        for sub in pmeta.get("stack", []):
            dst = out / "stack" / sub
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(parent / "stack" / sub, dst)
            stack.append(sub)
        if has_adapter(parent):
            top = f"{len(stack):02d}-{pmeta.get('name') or 'parent'}"
            dst = out / "stack" / top
            dst.mkdir(parents=True, exist_ok=True)
            for f in ADAPTER_FILES:
                shutil.copy2(parent / f, dst / f)
            stack.append(top)
    meta = {"family": family, "stack": stack, "name": name}
    write_meta(out, meta)
    return meta


# ------------------------------------------------------------------------------------------------ prompts


def question_text(question: str, choices: list[str] | None = None) -> str:
    """The question as the model sees it; multiple-choice options are listed as ``A. …`` lines unless the
    question already carries them.

    MMStar ships its options inside the question ("…\nOptions: A: red, B: blue", srcal.data.adapters) and its
    adapter also fills ``choices`` from them, so listing them again would show the model every option twice.
    The question carries the options when, for every letter in order, a marker (``A.``, ``A)``, ``A:`` at
    a line start or inline after whitespace or ``, ; :``, or ``(A)``) is followed by that choice's text; the
    text check keeps a stray "plan A." in a question from hiding options the model has not seen.
    """
    import re

    if not choices:
        return question

    def norm(text: str) -> str:
        return " ".join(text.split()).casefold()

    pos = 0
    letters = [chr(65 + i) for i in range(len(choices))]
    for ch, choice in zip(letters, choices):
        want = norm(choice)[:40]
        marker = re.compile(rf"\({ch}\)|(?:(?<=[\s,;:])|^){ch}[.):]", re.M)
        hit = next((m for m in marker.finditer(question, pos)
                    if norm(question[m.end():m.end() + 4 * len(want) + 16]).startswith(want)), None)
        if hit is None:
            return question.rstrip() + "\n" + "\n".join(f"{c}. {t}" for c, t in zip(letters, choices))
        pos = hit.end()
    return question


def plain_question_messages(question: str, choices: list[str] | None = None) -> list[dict[str, Any]]:
    """One user turn: one image and the question — and **no** instruction to reason or to use a format.

    This is the paper's RFT/eval setting: the model must produce rationale-answer pairs unprompted, so
    ``rap_format`` measures what fine-tuning taught, not what a prompt asked for.
    """
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text(question, choices)}]}]
