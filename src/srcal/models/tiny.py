"""Tiny offline models: the real Hugging Face architectures, shrunk, built without any hub download.

Our machines and CI cannot reach the Hugging Face Hub, so the embedded ``tiny`` recipe builds its models
here, the way TRL builds its ``trl-internal-testing/tiny-*`` models (real config classes, shrunk), except
that the tokenizer is trained on shapes-world text instead of being downloaded:

* :func:`train_tokenizer` — a byte-level BPE with chat template and the special tokens of both LVLM
  families. It is trained with **Qwen2's own normalizer and pre-tokenizer**, because ``AutoTokenizer`` on
  a ``qwen2``/``qwen2_vl`` folder builds a ``Qwen2Tokenizer`` that re-creates that pre-tokenizer whatever
  ``tokenizer.json`` says; trained this way, every saved model gives the same
  ids through ``AutoTokenizer`` as the tokenizer it was trained with (tested).
* :func:`build_llava` — ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` (CLIP tower, Llama LM).
* :func:`build_qwen2_vl` — ``Qwen2VLForConditionalGeneration`` + :class:`Qwen2VLImageOnlyProcessor`.
* :func:`build_qwen2_text` — ``Qwen2ForCausalLM``, the R-Scorer judge's architecture.

Text models use head_dim 64 (hidden / heads) so that vLLM's attention backends accept them. Everything is
saved with ``save_pretrained`` and reloads with the Auto classes (Qwen2-VL's processor: see
:func:`load_tiny_processor`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Special tokens of both LVLM families; LLaVA uses <image>, Qwen2-VL the vision_* / *_pad tokens.
SPECIAL_TOKENS = [
    "<pad>", "<s>", "</s>", "<unk>", "<image>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|endoftext|>",
]
# Qwen2Tokenizer's pre-tokenizer regex (transformers/models/qwen2/tokenization_qwen2.py), copied so the
# trained merges match what AutoTokenizer rebuilds for qwen2/qwen2_vl folders.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _chat_template(image_markup: str) -> str:
    """ChatML-style template; ``image_markup`` is what one ``{"type": "image"}`` part renders to."""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for c in message['content'] %}{% if c['type'] == 'image' %}" + image_markup +
        "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


LLAVA_CHAT_TEMPLATE = _chat_template("<image>")
QWEN_CHAT_TEMPLATE = _chat_template("<|vision_start|><|image_pad|><|vision_end|>")


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Train a byte-level BPE on ``corpus`` and wrap it as a transformers fast tokenizer.

    EOS is ``<|im_end|>`` so that generation stops at the end of the assistant turn; the chat template is
    LLaVA's (the Qwen2-VL builder swaps in its own). Deterministic for a given corpus.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>",
                                 pad_token="<pad>", unk_token="<unk>",
                                 extra_special_tokens={"image_token": "<image>"})
    hf.chat_template = LLAVA_CHAT_TEMPLATE
    return hf


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _set_generation_ids(model, tok) -> None:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id


def _check_head_dim(hidden: int, heads: int) -> None:
    if hidden % heads:
        raise ValueError(f"text hidden size {hidden} is not divisible by {heads} heads")


def build_llava(tokenizer, out_dir: str | Path, *, image_size: int = 48, patch_size: int = 8,
                vision_hidden: int = 64, vision_layers: int = 2, vision_heads: int = 2,
                text_hidden: int = 128, text_layers: int = 2, text_heads: int = 2,
                text_kv_heads: int | None = None, text_intermediate: int | None = None,
                max_positions: int = 1024, seed: int = 0) -> Path:
    """Build a randomly initialised tiny LLaVA (CLIP tower + projector + Llama LM) and save it with its
    processor to ``out_dir``. The image becomes (image_size/patch_size)² tokens (CLS dropped).

    Returns ``out_dir``; reload with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    _check_head_dim(text_hidden, text_heads)
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    _seed(seed)
    tok = tokenizer
    tok.chat_template = LLAVA_CHAT_TEMPLATE
    n_image_tokens = (image_size // patch_size) ** 2
    vcfg = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                            num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                            image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden)
    tcfg = LlamaConfig(vocab_size=len(tok), hidden_size=text_hidden,
                       intermediate_size=text_intermediate or 2 * text_hidden,
                       num_hidden_layers=text_layers, num_attention_heads=text_heads,
                       num_key_value_heads=text_kv_heads or text_heads, max_position_embeddings=max_positions,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-1,
                      image_seq_length=n_image_tokens)
    model = LlavaForConditionalGeneration(cfg)
    _set_generation_ids(model, tok)
    ip = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                               crop_size={"height": image_size, "width": image_size}, do_center_crop=True,
                               image_mean=[0.48145466, 0.4578275, 0.40821073],
                               image_std=[0.26862954, 0.26130258, 0.27577711])
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=LLAVA_CHAT_TEMPLATE)
    out = Path(out_dir)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def _qwen_image_only_processor_cls():
    """Build :class:`Qwen2VLImageOnlyProcessor` lazily (it subclasses a transformers class)."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
        """Qwen2VLProcessor without the video processor, which needs torchvision (broken on CPU boxes). Forces the Qwen image tokens: our tokenizer also carries LLaVA's
        ``<image>`` as ``tokenizer.image_token``, which the stock processor would pick up.
        """

        attributes = ["image_processor", "tokenizer"]  # noqa: RUF012 (transformers reads this class attribute)

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    Qwen2VLImageOnlyProcessor.__module__ = __name__
    return Qwen2VLImageOnlyProcessor


_QWEN_PROC_CLS = None


def qwen2_vl_image_only_processor_cls():
    """The (cached) image-only Qwen2-VL processor class."""
    global _QWEN_PROC_CLS
    if _QWEN_PROC_CLS is None:
        _QWEN_PROC_CLS = _qwen_image_only_processor_cls()
    return _QWEN_PROC_CLS


def build_qwen2_vl(tokenizer, out_dir: str | Path, *, image_size: int = 56, vision_hidden: int = 32,
                   vision_layers: int = 2, vision_heads: int = 2, text_hidden: int = 128, text_layers: int = 2,
                   text_heads: int = 2, text_kv_heads: int | None = None, text_intermediate: int | None = None,
                   max_positions: int = 1024, seed: int = 0) -> Path:
    """Build a randomly initialised tiny Qwen2-VL and save it with an image-only processor.

    Images are resized to ``image_size`` (rounded to a multiple of 28), i.e. (image_size/28)² tokens after
    the 2×2 merge. mrope_section must sum to head_dim/2; it is split 1:1.5:1.5 as in Qwen2-VL.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _check_head_dim(text_hidden, text_heads)
    _seed(seed)
    tok = tokenizer
    head_dim = text_hidden // text_heads
    half = head_dim // 2
    t = half // 4
    mrope = [t, (half - t) // 2, half - t - (half - t) // 2]
    ids = {k: tok.convert_tokens_to_ids(k) for k in ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>"]}
    cfg = Qwen2VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": text_hidden,
                         "intermediate_size": text_intermediate or 2 * text_hidden, "num_hidden_layers": text_layers,
                         "num_attention_heads": text_heads, "num_key_value_heads": text_kv_heads or text_heads,
                         "max_position_embeddings": max_positions,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
                         "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"depth": vision_layers, "embed_dim": vision_hidden, "hidden_size": text_hidden,
                           "num_heads": vision_heads, "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2,
                           "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    model = Qwen2VLForConditionalGeneration(cfg)
    _set_generation_ids(model, tok)
    side = max(28, round(image_size / 28) * 28)
    ip = Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=side * side)
    tok.chat_template = QWEN_CHAT_TEMPLATE
    proc = qwen2_vl_image_only_processor_cls()(ip, tok, chat_template=QWEN_CHAT_TEMPLATE)
    out = Path(out_dir)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def build_qwen2_text(tokenizer, out_dir: str | Path, hidden: int = 128, layers: int = 2, heads: int = 2,
                     intermediate: int | None = None, kv_heads: int | None = None, max_positions: int = 1024,
                     tie_word_embeddings: bool = True, seed: int = 0) -> Path:
    """Build a randomly initialised ``Qwen2ForCausalLM`` (the R-Scorer judge's architecture) and save it
    with ``tokenizer`` to ``out_dir``; reload with ``AutoModelForCausalLM`` / ``AutoTokenizer``.

    A tokenizer from :func:`train_tokenizer` round-trips through ``AutoTokenizer`` (which builds a
    ``Qwen2Tokenizer`` for this folder). A custom tokenizer with another pre-tokenizer may not: check it.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _check_head_dim(hidden, heads)
    _seed(seed)
    tok = tokenizer
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=tie_word_embeddings,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(cfg)
    _set_generation_ids(model, tok)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load_tiny_processor(model_dir: str | Path):
    """Load the processor saved next to a tiny (or real) LVLM.

    ``AutoProcessor`` on a Qwen2-VL folder saved with the image-only subclass silently returns the bare
    tokenizer, so that case is detected from the saved class name.
    """
    import json

    from transformers import AutoProcessor

    model_dir = Path(model_dir)
    cfg_file = model_dir / "processor_config.json"
    if cfg_file.exists():
        name = json.loads(cfg_file.read_text()).get("processor_class", "")
        if name == "Qwen2VLImageOnlyProcessor":
            return qwen2_vl_image_only_processor_cls().from_pretrained(model_dir)
    return AutoProcessor.from_pretrained(model_dir)


def build_tiny_lvlm(family: str, corpus: Iterable[str], out_dir: str | Path, *, image_size: int,
                    vocab_size: int, sizes: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """Train the tokenizer on ``corpus`` and build the tiny LVLM of ``family`` ("llava" or "qwen2_vl")."""
    from srcal.models.capabilities import CAPABILITIES

    builders = {"llava": build_llava, "qwen2_vl": build_qwen2_vl}  # the families whose capabilities say tiny
    if family not in builders:
        raise ValueError(f"tiny models exist for families 'llava' and 'qwen2_vl', not {family!r}")
    sizes = dict(sizes or {})
    if not CAPABILITIES[family].tiny_patch_size:
        sizes.pop("patch_size", None)  # Qwen2-VL's patch is fixed at 14 by the processor
    tok = train_tokenizer(corpus, vocab_size)
    return builders[family](tok, out_dir, image_size=image_size, seed=seed, **sizes)
