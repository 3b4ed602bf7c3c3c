"""The shipped families' per-stage tests, run on architectures added without a code change (issue 16).

Each release here is a row of :data:`srcal.models.shrunk.RELEASES` (a shrunken, random-weight copy with the
release's config, processor, chat template and real npm tokenizer) and a row of
:data:`srcal.models.capabilities.CAPABILITIES` — nothing else in srcal names it. The tests are the ones
tests/test_real_families.py runs on LLaVA-1.5, LLaVA-NeXT and Qwen2.5-VL, called with the new release and
a recipe that names no family (the architecture comes from the checkpoint): prompt and image-token counts,
HF search over mixed aspect ratios, then RFT (LoRA SFT, targets end with the end token), align (one DPO
step) and eval (generation from the aligned artifact).

Wall time: Qwen3-VL's search + RFT/align/eval and LLaVA-OneVision's prompts, token counts, processor and
search run in CI; OneVision's RFT/align/eval (prompts of 1,485-2,943 tokens) and all of Gemma 3 are ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_real_families as real
from real_models import QWEN25_JUDGE, shrunk_model

from srcal.models import capabilities

GEMMA3 = "google/gemma-3-4b-it"
QWEN3_VL = "Qwen/Qwen3-VL-8B-Instruct"
ONEVISION = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
# A recipe that names only a checkpoint: the template (model.base is the shrunken dir, model.family unset).
TEMPLATE = str(Path(__file__).resolve().parents[1] / "src" / "srcal" / "recipes" / "template.yaml")

PROMPTS = {
    GEMMA3: "<bos><start_of_turn>user\n<start_of_image>What colour?<end_of_turn>\n<start_of_turn>model\n",
    QWEN3_VL: "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour?<|im_end|>\n"
              "<|im_start|>assistant\n",  # no default system turn (Qwen2.5-VL has one)
    ONEVISION: "<|im_start|>user\n<image>\nWhat colour?<|im_end|>\n<|im_start|>assistant\n",  # no system turn
}
# Image tokens for 640x480 and 480x640. Gemma 3 resizes every image to 896x896 (no pan-and-scan in the
# release's preprocessor): (896/14)^2 = 4096 patches, average-pooled 4x4 to mm_tokens_per_image = 256.
# Qwen3-VL: sides rounded to multiples of patch 16 x merge 2 = 32 (640 = 20*32, 480 = 15*32 stay), a 40x30
# patch grid merged 2x2 -> 20*15 = 300, either orientation.
# LLaVA-OneVision (anyres_max_9, SigLIP 384/14 -> 27x27 = 729 features per tile, strategy "full" keeps all):
# both pick the 768x768 pinpoint (the smallest that holds the whole image: 2x2 tiles + base), a 54x54
# feature grid unpadded to the aspect ratio. 640x480: 480*54/640 = 40.5 -> 40 rows, padding (54-40)//2 = 7
# each side -> 40 rows x 54 + 40 newlines = 2200; 480x640: 40 columns -> 54 x 40 + 54 newlines = 2214;
# sqrt(2160 / (9 * 729)) = 0.57 < 1.1, so no anyres_max_9 downscaling; plus the 729-token base: 2929, 2943.
IMAGE_TOKENS = {GEMMA3: (256, 256), QWEN3_VL: (300, 300), ONEVISION: (2929, 2943)}
CI = (QWEN3_VL, ONEVISION)
# LLaVA-OneVision's prompts are 1,485-2,943 tokens (729 per anyres tile) against a 152K vocabulary, so its
# training steps cost several times a family's CI budget: its RFT/align/eval is `slow`, while its processor,
# tokenizer, image-token counts and batched anyres search run in CI.
CI_TRAINING = (QWEN3_VL,)
NEW = (GEMMA3, QWEN3_VL, ONEVISION)


def _params(releases, ci=CI):
    return [pytest.param(r, marks=() if r in ci else pytest.mark.slow) for r in releases]


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


@pytest.mark.parametrize("new_release", _params(NEW, CI_TRAINING), indirect=True)
def test_rft_align_eval(new_release, data_dir, tmp_path, monkeypatch):
    real.test_rft_align_eval_on_the_real_architecture(new_release, data_dir, tmp_path, monkeypatch)


# --------------------------------------------------------------------------------------- LLaVA-OneVision


def test_llava_onevision_tokenizer_is_qwen2s_with_the_image_and_video_tokens():
    """Qwen2-7B-Instruct's tokenizer (3 added tokens, 151643-151645) + the conversion script's '<image>'
    151646 and '<video>' 151647; the npm copy's Qwen2.5/Qwen3 tokens at those ids are gone. The embedding
    has 152,128 rows: Qwen2-7B's 152,064 + 2, padded to a multiple of 64 (152,066 -> 2,377 * 64)."""
    from transformers import AutoConfig, AutoTokenizer

    d = shrunk_model(ONEVISION)
    tok = AutoTokenizer.from_pretrained(d)
    assert tok("What is this?")["input_ids"] == [3838, 374, 419, 30]  # the same BPE as Qwen2.5's
    specials = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<image>": 151646,
                "<video>": 151647}
    assert {t: tok.convert_tokens_to_ids(t) for t in specials} == specials
    assert "<|vision_start|>" not in tok.get_vocab() and "<think>" not in tok.get_vocab()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    cfg = AutoConfig.from_pretrained(d)
    assert (len(tok), cfg.get_text_config().vocab_size) == (151648, 152128)
    assert (cfg.image_token_index, cfg.vision_feature_select_strategy, cfg.vision_aspect_ratio) == \
        (151646, "full", "anyres_max_9")
    assert len(cfg.image_grid_pinpoints) == 36 and cfg.vision_config.image_size == 384


def test_llava_onevision_processor_loads_without_torchvision(tmp_path, data_dir):
    """AutoProcessor on the released layout raises 'LlavaOnevisionVideoProcessor requires the Torchvision
    library' here; srcal's loader assembles the image-only processor with the release's settings (729
    tokens per tile, strategy "full"), which saves under the released class name. 640x480 is tiled 2x2 +
    base = 5 tiles of 384x384 (the 768x768 pinpoint), 1000x300 1x3 + base = 4 (the 384x1152 pinpoint)."""
    from PIL import Image
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    from srcal.models.loading import load_processor, saved_processor_class

    d = shrunk_model(ONEVISION)
    if is_torchvision_available():
        pytest.skip("torchvision is installed: the released processor loads as is")
    with pytest.raises(ImportError, match="Torchvision"):
        AutoProcessor.from_pretrained(d)
    proc = load_processor(d)
    assert type(proc).__name__ == "LlavaOnevisionProcessor" and proc.image_token_id == 151646
    assert (proc.num_image_tokens, proc.vision_feature_select_strategy) == (729, "full")
    images = [Image.open(data_dir / "images" / f"s{i}.png").convert("RGB") for i in (0, 2)]  # 640x480, 1000x300
    enc = proc(images=images, text=["<image>\nhi", "<image>\nhi"], padding=True, return_tensors="pt")
    assert enc["pixel_values"].shape[1:] == (5, 3, 384, 384) and enc["image_sizes"].tolist() == [[480, 640], [300, 1000]]
    proc.save_pretrained(tmp_path)
    assert saved_processor_class(tmp_path) == "LlavaOnevisionProcessor"
    again = load_processor(tmp_path)
    assert type(again).__name__ == "LlavaOnevisionProcessor" and again.num_image_tokens == 729


def test_llava_onevision_recipe_names_the_missing_vllm_lora_capability():
    """vLLM 0.32's LlavaOnevisionForConditionalGeneration has no LoRA support: the template (search.engine
    vllm) naming only the OneVision checkpoint gets exactly that problem, and none with search.engine=hf."""
    from srcal.config import load_recipe

    d = shrunk_model(ONEVISION)
    recipe = load_recipe(TEMPLATE, [f"model.base={d}"])
    assert recipe.model.family == "" and capabilities.recipe_family(recipe) == "llava_onevision"
    assert capabilities.problems(recipe) == [
        "search.engine: vLLM cannot serve 'llava_onevision' with a LoRA adapter (missing capability 'vLLM serving "
        "with LoRA'); set search.engine=hf"]
    assert capabilities.problems(load_recipe(TEMPLATE, [f"model.base={d}", "search.engine=hf"])) == []


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
