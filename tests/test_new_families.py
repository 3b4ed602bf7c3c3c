"""The shipped families' per-stage tests, run on architectures added without a code change (issue 16).

Each release here is a row of :data:`srcal.models.shrunk.RELEASES` (a shrunken, random-weight copy with the
release's config, processor, chat template and real npm tokenizer) and a row of
:data:`srcal.models.capabilities.CAPABILITIES` — nothing else in srcal names it. The tests are the ones
tests/test_real_families.py runs on LLaVA-1.5, LLaVA-NeXT and Qwen2.5-VL, called with the new release and
a recipe that names no family (the architecture comes from the checkpoint): prompt and image-token counts,
HF search over mixed aspect ratios, then RFT (LoRA SFT, targets end with the end token), align (one DPO
step) and eval (generation from the aligned artifact).

Wall time: one new architecture's search + RFT/align/eval runs in CI; the others are ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_real_families as real
from real_models import QWEN25_JUDGE, shrunk_model

from srcal.models import capabilities

GEMMA3 = "google/gemma-3-4b-it"
QWEN3_VL = "Qwen/Qwen3-VL-8B-Instruct"
# A recipe that names only a checkpoint: the template (model.base is the shrunken dir, model.family unset).
TEMPLATE = str(Path(__file__).resolve().parents[1] / "src" / "srcal" / "recipes" / "template.yaml")

PROMPTS = {
    GEMMA3: "<bos><start_of_turn>user\n<start_of_image>What colour?<end_of_turn>\n<start_of_turn>model\n",
    QWEN3_VL: "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour?<|im_end|>\n"
              "<|im_start|>assistant\n",  # no default system turn (Qwen2.5-VL has one)
}
# Image tokens for 640x480 and 480x640. Gemma 3 resizes every image to 896x896 (no pan-and-scan in the
# release's preprocessor): (896/14)^2 = 4096 patches, average-pooled 4x4 to mm_tokens_per_image = 256.
# Qwen3-VL: sides rounded to multiples of patch 16 x merge 2 = 32 (640 = 20*32, 480 = 15*32 stay), a 40x30
# patch grid merged 2x2 -> 20*15 = 300, either orientation.
IMAGE_TOKENS = {GEMMA3: (256, 256), QWEN3_VL: (300, 300)}
CI = (QWEN3_VL,)
NEW = (GEMMA3, QWEN3_VL)


def _params(releases):
    return [pytest.param(r, marks=() if r in CI else pytest.mark.slow) for r in releases]


@pytest.fixture
def new_release(monkeypatch, request):
    """Register the release with the shared test tables: its recipe is the template (no family)."""
    release = request.param
    monkeypatch.setitem(real.RECIPES, release, TEMPLATE)
    monkeypatch.setitem(real.FAMILY, release, capabilities.for_model_dir(shrunk_model(release)).family)
    monkeypatch.setitem(real.PROMPTS, release, PROMPTS[release])
    monkeypatch.setitem(real.IMAGE_TOKENS, release, IMAGE_TOKENS[release])
    return release


data_dir = real.data_dir
_threads = real._threads


@pytest.mark.parametrize("new_release", _params(NEW), indirect=True)
def test_family_is_read_from_the_checkpoint(new_release):
    d = shrunk_model(new_release)
    caps = capabilities.for_model_dir(d)
    assert caps.family == real.FAMILY[new_release] and caps.model_type in capabilities.CAPABILITIES


@pytest.mark.parametrize("new_release", _params(NEW), indirect=True)
def test_prompts_and_image_token_counts(new_release, data_dir):
    real.test_prompts_and_image_token_counts_are_the_releases(new_release, data_dir)


@pytest.mark.parametrize("new_release", _params(NEW), indirect=True)
def test_hf_search_over_mixed_aspect_ratios(new_release, data_dir):
    real.test_hf_search_over_mixed_aspect_ratios(new_release, data_dir)


@pytest.mark.parametrize("new_release", _params(NEW), indirect=True)
def test_rft_align_eval(new_release, data_dir, tmp_path, monkeypatch):
    real.test_rft_align_eval_on_the_real_architecture(new_release, data_dir, tmp_path, monkeypatch)


# ------------------------------------------------------------------------- a recipe that names a checkpoint


@pytest.mark.slow
def test_a_recipe_naming_only_the_checkpoint_runs_preflight_base_and_rft(tmp_path, monkeypatch):
    """The template with model.base = a shrunken Qwen3-VL directory and no model.family (plus the CPU
    dry-run sizes of docs/real-models.md): preflight passes, ``base`` records the family read from
    config.json, ``rft`` asks the teacher endpoint (loopback) and trains a LoRA on the language model."""
    import json

    import real_data
    from loopback_openai import Teacher
    from test_e2e_real import dry_run_overrides

    from srcal import preflight, stages
    from srcal.config import load_recipe
    from srcal.data.adapters import read_source
    from srcal.models.loading import read_meta

    monkeypatch.setenv("SRCAL_CACHE_DIR", str(tmp_path / "cache"))
    dirs = real_data.write_recipe_sources(tmp_path / "releases", 8, scale=0.5)
    answers = {}
    for (adapter, category, _), d in zip(real_data.RECIPE_SOURCES, dirs, strict=True):
        rows, _ = read_source(adapter, str(d), category=category, out_dir=tmp_path / ".answers", max_rejected_share=0.0)
        answers.update({r["question"]: r["answer"] for r in rows})
    model = shrunk_model(QWEN3_VL)
    judge = shrunk_model(QWEN25_JUDGE)
    with Teacher(answers) as teacher:
        sets = dry_run_overrides(model=str(model), judge=str(judge), sources=dirs, teacher=teacher.url,
                                 labeller="http://127.0.0.1:9/v1", judge_url="http://127.0.0.1:9/v1", rounds=1)
        recipe = load_recipe(TEMPLATE, [*sets, "rft.save_steps=0"])
        assert recipe.model.family == "" and recipe.model.base == str(model)
        preflight.check(recipe)
        run = tmp_path / "run"
        stages.execute("data", recipe, {}, str(run / "data"))
        base = stages.execute("base", recipe, {"data": str(run / "data")}, str(run / "base"))
        assert base["family"] == "qwen3_vl" and read_meta(run / "base")["family"] == "qwen3_vl"
        rft = stages.execute("rft", recipe, {"data": str(run / "data"), "base": str(run / "base")}, str(run / "rft"))
    assert rft["counts"]["trained_rows"] >= 1 and len(teacher.requests) >= 1
    assert read_meta(run / "rft") == {"family": "qwen3_vl", "stack": [], "name": "rft"}
    targets = json.loads((run / "rft" / "adapter_config.json").read_text())["target_modules"]
    assert "language_model" in targets


def test_srcal_model_shrink_builds_a_dry_run_copy_from_config_json(tmp_path):
    """`srcal model shrink --config config.json`: the released Qwen3-VL config.json alone (no tokenizer next
    to it) becomes a 2-layer random-weight model with the bundled release's tokenizer, processor and
    template; the same command on that directory copies its files. Both load and pass the preflight."""
    import json
    import subprocess
    import sys

    from srcal.models.shrunk import RELEASES

    src = tmp_path / "qwen3-vl"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(RELEASES[QWEN3_VL].config))
    out = tmp_path / "shrunk"
    env = {"SRCAL_TOKENIZER_CACHE": str(_tokenizer_cache()), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "srcal.cli", "model", "shrink", "--config", str(src / "config.json"),
                          "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == str(out) and f"bundled release {QWEN3_VL}" in res.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_vl" and cfg["text_config"]["num_hidden_layers"] == 2
    assert cfg["vision_config"]["patch_size"] == 16 and cfg["image_token_id"] == 151655  # released values kept
    assert capabilities.for_model_dir(out).family == "qwen3_vl"
    again = tmp_path / "again"
    res = subprocess.run([sys.executable, "-m", "srcal.cli", "model", "shrink", "--config", str(out), "--out",
                          str(again), "--layers", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "copied from" in res.stderr and (again / "chat_template.jinja").read_text() == \
        (out / "chat_template.jinja").read_text()
    assert json.loads((again / "config.json").read_text())["text_config"]["num_hidden_layers"] == 1


def _tokenizer_cache():
    from real_models import require_tokenizers

    return require_tokenizers()
