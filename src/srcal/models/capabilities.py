"""What srcal needs to know about a base model's architecture, looked up from its checkpoint (issue 16).

Why: platform teams re-run the calibration for every base model they adopt. The architecture is in the
checkpoint — ``config.json``'s ``model_type`` (and ``architectures``) — so a recipe names only the
checkpoint (``model.base``) and everything architecture-specific is looked up here, in one table, instead
of ``family ==`` branches spread through the stages. ``model.family`` is an optional override for the
unusual case (a fine-tune whose ``config.json`` carries a renamed ``model_type`` but a known architecture).

What a stage needs from an architecture (one :class:`Capabilities` per ``model_type``):

* **image-text-to-text**: ``AutoModelForImageTextToText`` loads it, ``AutoProcessor`` turns one image and
  the chat-templated text into inputs, and the config names the image placeholder id (``image_token_id``
  or ``image_token_index``; the HF engine suppresses it in generation and LLaVA's feature cache finds the
  image rows with it).
* **language model**: the module prefix of the language model. LoRA targets must stay inside it: vLLM
  serves LoRA on the language model only and silently ignores an adapter on the vision tower,
  and TRL refuses ``lm_head``. ``outside_lm`` are real module names
  of the vision tower and projector that :func:`srcal.models.loading.lora_config` tries the recipe's regex
  against (tests/test_capabilities.py checks that each exists in the shrunken release).
* **turn end**: how the chat template closes an assistant turn. Not a property of ``model_type`` (a
  llava_next checkpoint may carry a Llama-3 or a Vicuna template), so it is read from the checkpoint's own
  template by :func:`srcal.models.chat.turn_end_text`; SFT and DPO append the EOS text where the template
  does not close the turn (LLaVA-1.5). What *is* required of the checkpoint is a chat template, which the
  preflight checks (:func:`problems`).
* **vLLM with LoRA**: whether vLLM can serve the architecture with a LoRA adapter (search.engine=vllm).
* **processor quirks**: the Qwen-VL and LLaVA-OneVision processors build a video processor that needs
  torchvision (``image_only_processor``: :func:`srcal.models.loading.image_only_processor_cls` assembles
  ``processor_class`` without it where torchvision is missing); Gemma 3's processor
  returns ``token_type_ids`` that its model requires when training (bidirectional attention over the
  image); LLaVA-1.5's fixed 576 image rows let the HF engine project the image once per sample
  (``cache_image_features``).
* **tiny**: :mod:`srcal.models.tiny` can build an offline shapes-world copy (``model.base: tiny``).

An architecture without an entry fails the preflight (:func:`problems`, called by
:func:`srcal.preflight.check`) before any stage runs, with the capability it lacks named. This module
imports nothing heavy (no torch, no transformers), so that check costs milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LANGUAGE_MODEL = "model.language_model."  # transformers 5 layout of every *ForConditionalGeneration here


@dataclass(frozen=True)
class Capabilities:
    """What srcal needs from one architecture (see the module docstring for why each matters)."""

    model_type: str
    architectures: tuple[str, ...]  # transformers classes a checkpoint of this type declares
    outside_lm: tuple[str, ...]  # real module names outside the language model (vision tower, projector)
    image_token_attr: str = "image_token_id"  # config attribute with the image placeholder id
    vllm_lora: bool = True  # vLLM serves this architecture with a LoRA adapter on its language model
    image_only_processor: bool = False  # AutoProcessor also builds a torchvision-only video processor
    processor_class: str = ""  # the release's processor class (srcal.models.loading assembles it image-only)
    token_type_ids: bool = False  # the processor's token_type_ids are a required training input (TRL's
    #                               collators pass them through; recorded for any other training path)
    cache_image_features: bool = False  # a fixed image-row count lets the HF engine project images once
    nested_images: bool = False  # a batched processor call wants one list of images per prompt
    tiny: bool = False  # srcal.models.tiny builds an offline copy of this family
    tiny_patch_size: bool = False  # the tiny builder takes model.tiny.patch_size (the Qwen-VL patch is fixed)
    vllm_vision_rename: bool = False  # transformers saves the vision tower under names vLLM does not load
    language_model: str = LANGUAGE_MODEL

    @property
    def family(self) -> str:
        """srcal's family name (``model.family``, ``srcal_model.json``): the ``model_type`` itself."""
        return self.model_type


_CLIP = "model.vision_tower.encoder.layers.0.self_attn.q_proj"  # transformers 5 module names
_SIGLIP = _CLIP  # SigLIP keeps CLIP's module layout
_PROJ = "model.multi_modal_projector.linear_1"

CAPABILITIES: dict[str, Capabilities] = {c.model_type: c for c in (
    Capabilities("llava", ("LlavaForConditionalGeneration",), (_CLIP, _PROJ), image_token_attr="image_token_index",
                 cache_image_features=True, tiny=True, tiny_patch_size=True, vllm_vision_rename=True),
    Capabilities("llava_next", ("LlavaNextForConditionalGeneration",), (_CLIP, _PROJ),
                 image_token_attr="image_token_index", vllm_vision_rename=True),
    # vLLM (0.32) serves LlavaOnevisionForConditionalGeneration without LoRA support (no SupportsLoRA)
    Capabilities("llava_onevision", ("LlavaOnevisionForConditionalGeneration",), (_SIGLIP, _PROJ),
                 image_token_attr="image_token_index", vllm_lora=False, image_only_processor=True,
                 processor_class="LlavaOnevisionProcessor"),
    Capabilities("qwen2_vl", ("Qwen2VLForConditionalGeneration",), ("model.visual.blocks.0.attn.qkv",
                                                                    "model.visual.merger.mlp.0"),
                 image_only_processor=True, processor_class="Qwen2VLProcessor", tiny=True),
    Capabilities("qwen2_5_vl", ("Qwen2_5_VLForConditionalGeneration",), ("model.visual.blocks.0.attn.qkv",
                                                                         "model.visual.merger.mlp.0"),
                 image_only_processor=True, processor_class="Qwen2_5_VLProcessor"),
    Capabilities("qwen3_vl", ("Qwen3VLForConditionalGeneration",), ("model.visual.blocks.0.attn.qkv",
                                                                    "model.visual.merger.linear_fc1"),
                 image_only_processor=True, processor_class="Qwen3VLProcessor"),
    Capabilities("gemma3", ("Gemma3ForConditionalGeneration",),
                 (_SIGLIP, "model.multi_modal_projector.mm_soft_emb_norm"), image_token_attr="image_token_index",
                 token_type_ids=True, nested_images=True),
    Capabilities("internvl", ("InternVLForConditionalGeneration",),
                 ("model.vision_tower.encoder.layer.0.attention.q_proj", "model.multi_modal_projector.linear_1")),
)}
FAMILIES = tuple(CAPABILITIES)  # the values model.family accepts (besides "" = from the checkpoint)
DEFAULT_TINY_FAMILY = "llava"  # model.base: tiny with no model.family

# what each capability is called in the messages of UnsupportedArchitecture
NEEDS = ("image-text-to-text loading (AutoModelForImageTextToText + AutoProcessor with a chat template)",
         "the language model's module path (LoRA targets must stay inside it)",
         "the image placeholder token", "vLLM serving with LoRA", "the processor's quirks")


class UnsupportedArchitecture(ValueError):
    """The checkpoint's architecture has no capability entry, or lacks one the recipe needs."""


def outside_lm_probes() -> tuple[str, ...]:
    """Every known non-language-model module name: the LoRA target guard tries the regex against each."""
    return tuple(dict.fromkeys(p for c in CAPABILITIES.values() for p in c.outside_lm))


# --------------------------------------------------------------------------------------------- lookups


def lookup(model_type: str | None, architectures: list[str] | tuple[str, ...] = (), *,
           family: str = "", where: str = "") -> Capabilities:
    """The capabilities of ``model_type`` (or of the ``family`` override); raises
    :class:`UnsupportedArchitecture` naming what is missing."""
    if family:
        if family not in CAPABILITIES:
            raise UnsupportedArchitecture(f"model.family {family!r} is not a known family; known: {list(FAMILIES)}")
        return CAPABILITIES[family]
    if model_type in CAPABILITIES:
        return CAPABILITIES[model_type]
    by_arch = {a: c for c in CAPABILITIES.values() for a in c.architectures}
    for a in architectures or ():
        if a in by_arch:
            return by_arch[a]
    raise UnsupportedArchitecture(_unsupported_message(model_type, architectures, where))


def _unsupported_message(model_type, architectures, where: str) -> str:
    arch = f" ({', '.join(architectures)})" if architectures else ""
    head = f"{where}: " if where else ""
    if not model_type:
        return f"{head}config.json has no model_type; srcal reads the architecture from it"
    generative_text = any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures or ())
    if generative_text:
        missing = "image-text-to-text (a text-only model has no image input; srcal calibrates vision-language models)"
    else:
        missing = "a capability entry (unknown for it: " + "; ".join(NEEDS) + ")"
    return (f"{head}model_type {model_type!r}{arch} is not supported: missing {missing}. Supported model types: "
            f"{', '.join(FAMILIES)}. A checkpoint of a supported architecture under another model_type can set "
            "model.family; a new architecture needs an entry in srcal.models.capabilities.CAPABILITIES "
            "(docs/new-base-model.md)")


def read_config(model_ref: str | Path) -> dict[str, Any] | None:
    """``config.json`` of a local model directory (following a srcal base pointer), else None (hub ids and
    ``s3://`` URIs are resolved when the stage loads them)."""
    d = _resolved_dir(str(model_ref))
    return json.loads((d / "config.json").read_text()) if d is not None else None


def for_config(cfg: dict[str, Any], *, family: str = "", where: str = "") -> Capabilities:
    """Capabilities of a parsed ``config.json``."""
    return lookup(cfg.get("model_type"), tuple(cfg.get("architectures") or ()), family=family, where=where)


def for_model_dir(model_ref: str | Path, *, family: str = "") -> Capabilities:
    """Capabilities of a model directory / base pointer / artifact (its ``srcal_model.json`` family first),
    or of a hub id (its config through ``transformers.AutoConfig``)."""
    meta_file = Path(str(model_ref)) / "srcal_model.json"
    if not family and meta_file.is_file():
        family = json.loads(meta_file.read_text()).get("family") or ""
    if family:
        return lookup(None, family=family)
    cfg = read_config(model_ref)
    if cfg is None:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(str(model_ref))
        cfg = {"model_type": c.model_type, "architectures": list(getattr(c, "architectures", None) or ())}
    return for_config(cfg, where=str(model_ref))


def for_loaded(model) -> Capabilities:
    """Capabilities of a loaded transformers model (its ``config.model_type``); PEFT wrappers pass through."""
    cfg = model.config
    return lookup(getattr(cfg, "model_type", None), tuple(getattr(cfg, "architectures", None) or ()))


def of_loaded_or_none(model) -> Capabilities | None:
    """Like :func:`for_loaded`, None for a model srcal has no entry for (e.g. a text-only judge)."""
    try:
        return for_loaded(model)
    except UnsupportedArchitecture:
        return None


def tiny_family(recipe) -> str:
    """The family of the tiny offline model a recipe builds (``model.base: tiny``)."""
    family = recipe.model.family or DEFAULT_TINY_FAMILY
    if not CAPABILITIES[family].tiny:
        tiny = [f for f, c in CAPABILITIES.items() if c.tiny]
        raise UnsupportedArchitecture(f"model.family {family!r}: srcal.models.tiny has no tiny copy of it (tiny "
                                      f"families: {tiny}); use a shrunken real model instead (srcal model shrink)")
    return family


def recipe_family(recipe) -> str:
    """The family a run records: the tiny family, the override, or the checkpoint's ``model_type``."""
    if recipe.model.base == "tiny":
        return tiny_family(recipe)
    return for_model_dir(recipe.model.base, family=recipe.model.family).family


def image_token_id(config) -> int | None:
    """The image placeholder id of a loaded model's config (whichever attribute its architecture uses)."""
    caps = lookup(getattr(config, "model_type", None), tuple(getattr(config, "architectures", None) or ())) \
        if getattr(config, "model_type", None) in CAPABILITIES else None
    attrs = (caps.image_token_attr,) if caps else ("image_token_id", "image_token_index")
    for a in (*attrs, "image_token_id", "image_token_index"):
        v = getattr(config, a, None)
        if v is not None:
            return int(v)
    return None


def per_prompt_images(model, images: list) -> list:
    """``images`` (one per prompt) laid out as the model's processor takes a batch: flat, or one list per
    prompt (Gemma 3's processor counts images per prompt and refuses a flat list of several)."""
    caps = of_loaded_or_none(model)
    return [[im] for im in images] if caps is not None and caps.nested_images else list(images)


# ---------------------------------------------------------------------------------------------- preflight

CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def has_chat_template(model_dir: Path) -> bool:
    """A chat template in the directory: its own file or inside ``tokenizer_config.json``/``processor_config.json``."""
    if any((model_dir / f).is_file() for f in CHAT_TEMPLATE_FILES):
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        f = model_dir / name
        if f.is_file():
            try:
                if json.loads(f.read_text()).get("chat_template"):
                    return True
            except ValueError:
                continue
    return False


def _resolved_dir(ref: str) -> Path | None:
    """The local directory holding ``config.json`` that ``ref`` is or points at (srcal base pointers are
    followed; pointer chains are short), else None."""
    path = Path(ref).expanduser()
    for _ in range(4):
        if not path.is_dir():
            return None
        if (path / "config.json").is_file():
            return path
        pointer = path / "srcal_model.json"
        if not pointer.is_file():
            return None
        target = str(json.loads(pointer.read_text()).get("base") or "")
        if not target or target.startswith("s3://"):
            return None
        path = Path(target).expanduser()
    return None


def problems(recipe, key: str = "model.base") -> list[str]:
    """What the recipe's base model lacks, one line each (empty when srcal can calibrate it).

    Reads only ``config.json`` and the tokenizer/template files of a local checkpoint: hub ids and
    ``s3://`` bases are checked when the ``base`` stage resolves them (no network before the first stage).
    """
    m = recipe.model
    if m.base == "tiny":
        try:
            tiny_family(recipe)
        except UnsupportedArchitecture as e:
            return [f"model.family: {e}"]
        return []
    if m.family and m.family not in CAPABILITIES:
        return [f"model.family: {m.family!r} is not a known family; known: {list(FAMILIES)}"]
    d = _resolved_dir(m.base)
    if d is None:
        return []
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as e:
        return [f"{key}: {d / 'config.json'} is not readable JSON: {e}"]
    out = []
    mt = cfg.get("model_type")
    try:
        caps = for_config(cfg, family=m.family, where=f"{key}: {m.base}")
    except UnsupportedArchitecture as e:
        return [str(e)]
    if m.family and mt in CAPABILITIES and CAPABILITIES[mt].family != m.family:
        out.append(f"{key}: {m.base} is a {mt!r} model but model.family is {m.family!r}; set model.family={mt} "
                   "or remove model.family (the family is read from the checkpoint)")
    if not has_chat_template(d):
        out.append(f"{key}: {m.base} has no chat template (chat_template.jinja, or chat_template in "
                   "tokenizer_config.json): missing capability 'chat template' — srcal renders every prompt and "
                   "training target with the model's own template")
    if recipe.search.engine == "vllm" and not caps.vllm_lora:
        out.append(f"search.engine: vLLM cannot serve {caps.model_type!r} with a LoRA adapter (missing capability "
                   "'vLLM serving with LoRA'); set search.engine=hf")
    return out
