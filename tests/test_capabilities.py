"""The architecture comes from the checkpoint (srcal.models.capabilities, issue 16).

A recipe names only ``model.base``; the family, the LoRA guard's view of the language model, vLLM's LoRA
support and the processor quirks are looked up from ``config.json``. An architecture srcal does not know
fails the preflight in well under 2 s, naming what it lacks; a known one passes with no ``model.family``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from srcal import preflight
from srcal.config import ModelConfig, load_recipe
from srcal.models import capabilities
from srcal.models.capabilities import CAPABILITIES, UnsupportedArchitecture
from srcal.preflight import PreflightError

ROOT = Path(__file__).resolve().parents[1]
FILES = ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
         "chat_template.jinja")


def model_dir(root: Path, config: dict, files=FILES) -> Path:
    """A directory with the file names a hub download has (preflight reads names and config.json only)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    for name in files:
        (root / name).write_text("{}")
    return root


def _recipe(tmp_path, base: Path, *extra: str):
    """The llava-1.5 recipe with only model.base pointing at ``base`` and no family; sources exist."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "x.parquet").write_bytes(b"PAR1")
    srcs = [f"data.sources.{i}.path={data}" for i in range(5)]
    judge = tmp_path / "judge"
    if not judge.exists():
        model_dir(judge, {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
                  ("model.safetensors", "tokenizer.json"))
    return load_recipe("llava-1.5-7b", [*srcs, f"model.base={base}", "model.family=''", f"rscorer.base={judge}",
                                        "rscorer.serve=hf", *extra])


def test_family_values_are_the_capability_table():
    """model.family accepts '' (from the checkpoint) and exactly the families the table knows."""
    allowed = typing.get_args(typing.get_type_hints(ModelConfig)["family"])
    assert set(allowed) == {"", *capabilities.FAMILIES}
    assert ModelConfig().family == ""
    for old in ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl"):  # the families recipes used before
        assert old in capabilities.FAMILIES


def test_a_checkpoint_without_family_is_looked_up_from_config_json(tmp_path):
    cfg = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}
    d = model_dir(tmp_path / "gemma", cfg)
    recipe = _recipe(tmp_path, d)
    assert recipe.model.family == ""
    assert preflight.check(recipe) is None
    assert capabilities.recipe_family(recipe) == "gemma3"
    caps = capabilities.for_model_dir(d)
    assert caps.token_type_ids and not caps.image_only_processor
    # a base pointer (the base stage's artifact) resolves to the same
    ptr = tmp_path / "ptr"
    ptr.mkdir()
    (ptr / "srcal_model.json").write_text(json.dumps({"base": str(d), "name": "base", "stack": []}))
    assert capabilities.for_model_dir(ptr).family == "gemma3"


def test_a_renamed_model_type_is_found_by_architecture_or_family_override(tmp_path):
    """A fine-tune saved under its own model_type: its architectures name a known class, or the recipe
    overrides with model.family."""
    by_arch = model_dir(tmp_path / "a", {"model_type": "my_llava", "architectures": ["LlavaForConditionalGeneration"]})
    assert capabilities.for_model_dir(by_arch).family == "llava"
    unknown = model_dir(tmp_path / "b", {"model_type": "my_vlm", "architectures": ["MyVLM"]})
    with pytest.raises(UnsupportedArchitecture):
        capabilities.for_model_dir(unknown)
    assert capabilities.for_model_dir(unknown, family="qwen2_5_vl").family == "qwen2_5_vl"
    assert preflight.check(_recipe(tmp_path, unknown, "model.family=qwen2_5_vl")) is None
    # a known model_type with a contradicting override is a mistake, named with the fix
    qwen = model_dir(tmp_path / "c", {"model_type": "qwen2_5_vl"})
    with pytest.raises(PreflightError, match="is a 'qwen2_5_vl' model but model.family is 'llava'; set "
                                             "model.family=qwen2_5_vl"):
        preflight.check(_recipe(tmp_path, qwen, "model.family=llava"))


UNSUPPORTED = {
    # (config.json, what the message must name)
    "mllama": ({"model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"]},
               "missing a capability entry (unknown for it: image-text-to-text loading"),
    "text-only": ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
                  "missing image-text-to-text (a text-only model has no image input"),
    "no-model-type": ({"architectures": ["Whatever"]}, "config.json has no model_type"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_an_unsupported_architecture_fails_preflight_fast_naming_the_capability(case, tmp_path):
    cfg, needle = UNSUPPORTED[case]
    d = model_dir(tmp_path / case, cfg)
    recipe = _recipe(tmp_path, d)
    t0 = time.perf_counter()
    with pytest.raises(PreflightError) as e:
        preflight.check(recipe)
    took = time.perf_counter() - t0
    assert took < 2.0
    msg = str(e.value)
    assert needle in msg and "model.base: " in msg
    if cfg.get("model_type"):
        assert f"model_type {cfg['model_type']!r}" in msg and "docs/new-base-model.md" in msg


def test_missing_chat_template_and_vllm_lora_are_named(tmp_path, monkeypatch):
    d = model_dir(tmp_path / "notemplate", {"model_type": "llava"}, FILES[:-1])
    with pytest.raises(PreflightError, match="missing capability 'chat template'"):
        preflight.check(_recipe(tmp_path, d))
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert preflight.check(_recipe(tmp_path, d)) is None
    no_lora = capabilities.Capabilities("llava", ("LlavaForConditionalGeneration",), (), vllm_lora=False)
    monkeypatch.setitem(CAPABILITIES, "llava", no_lora)
    with pytest.raises(PreflightError, match="vLLM cannot serve 'llava' with a LoRA adapter.*search.engine=hf"):
        preflight.check(_recipe(tmp_path, d, "search.engine=vllm"))
    assert preflight.check(_recipe(tmp_path, d, "search.engine=hf")) is None


def test_tiny_family_defaults_to_llava_and_refuses_families_without_a_tiny_copy():
    assert capabilities.tiny_family(load_recipe("tiny", ["model.family=''"])) == "llava"
    assert capabilities.tiny_family(load_recipe("tiny", ["model.family=qwen2_vl"])) == "qwen2_vl"
    with pytest.raises(PreflightError, match="srcal.models.tiny has no tiny copy"):
        preflight.check(load_recipe("tiny", ["model.family=gemma3"]))


def test_unsupported_architecture_fails_srcal_run_in_under_2s(tmp_path):
    """The CLI as a user runs it: exit 2, one message naming the missing capability, before any stage."""
    d = model_dir(tmp_path / "mllama", UNSUPPORTED["mllama"][0])
    recipe = _recipe(tmp_path, d)  # validates the overrides below
    overrides = [f"model.base={d}", "model.family=''", f"rscorer.base={recipe.rscorer.base}", "rscorer.serve=hf",
                 *(f"data.sources.{i}.path={s.path}" for i, s in enumerate(recipe.data.sources))]
    cmd = [sys.executable, "-m", "srcal.cli", "run", "--recipe", "llava-1.5-7b", "--out", str(tmp_path / "run")]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    took = time.perf_counter() - t0
    assert res.returncode == 2, res.stderr[-2000:]
    assert "model_type 'mllama'" in res.stderr and "missing a capability entry" in res.stderr
    assert not (tmp_path / "run" / "base").exists()
    assert took < 10  # interpreter start + imports on a loaded 2-core box; the check itself is < 2 s above


def test_no_family_branch_outside_the_capability_module():
    """Architecture decisions are capability lookups: no `family ==`/`model_type ==` tests in the stages."""
    rx = re.compile(r"\b(family|model_type)\b[\"')\]]*\s*(==|!=|\bin\s*\(|\bnot in\s*\()")
    hits = []
    for f in sorted((ROOT / "src" / "srcal").rglob("*.py")):
        if f.name == "capabilities.py":
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if rx.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


SHRUNK = __import__("srcal.models.shrunk", fromlist=["RELEASES"]).RELEASES
# every architecture: the shrunken release where there is one, else transformers' default config of the type
ARCHS = [*(k for k, r in SHRUNK.items() if r.config["model_type"] in CAPABILITIES),
         *(mt for mt in CAPABILITIES if all(r.config["model_type"] != mt for r in SHRUNK.values()))]


def _meta_model(arch):
    """The architecture with 1-2 layers on the meta device (no memory, no weights, no tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from srcal.models.shrunk import shrunk_config

    if arch in SHRUNK:
        cfg = AutoConfig.for_model(**shrunk_config(arch))
    else:
        cfg = AutoConfig.for_model(arch)
        cfg.get_text_config().num_hidden_layers = 1
        for a in ("num_hidden_layers", "depth"):
            if hasattr(cfg.vision_config, a):
                setattr(cfg.vision_config, a, 1)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(cfg), cfg.model_type


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_guard_probes_are_real_modules_and_default_targets_stay_in_the_language_model(arch):
    """Each capability probe outside the language model is a real module name of the architecture, the
    recipes' default target regex matches only modules under the language-model prefix, and lora_config
    refuses a regex that reaches a probe."""
    pytest.importorskip("torch")
    from srcal.config import LoraConfig
    from srcal.models.loading import lora_config

    model, model_type = _meta_model(arch)
    caps = CAPABILITIES[model_type]
    names = {n for n, _ in model.named_modules()}
    assert set(caps.outside_lm) <= names, sorted(n for n in names if "vision" in n or "visual" in n)[:20]
    default = re.compile(LoraConfig().target_modules)
    hits = [n for n in names if default.fullmatch(n)]
    assert hits and all(n.startswith(caps.language_model) for n in hits)
    for probe in caps.outside_lm:
        with pytest.raises(ValueError, match="keep LoRA inside the language model"):
            lora_config(LoraConfig(target_modules=re.escape(probe)))


def test_srcal_model_shrink_refuses_an_unsupported_config_before_loading_anything(tmp_path):
    """`srcal model shrink` reads config.json first: an architecture without capabilities exits 2, naming
    what is missing, without importing torch (a few seconds at most, mostly interpreter start)."""
    d = model_dir(tmp_path / "mllama", UNSUPPORTED["mllama"][0], ())
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "srcal.cli", "model", "shrink", "--config", str(d / "config.json"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2 and "model_type 'mllama'" in res.stderr and "missing a capability entry" in res.stderr
    assert not (tmp_path / "out").exists() and time.perf_counter() - t0 < 10
