"""srcal.serve.vllm_env parts that need no vLLM: checkpoint preparation, interpreter lookup, start-up errors.

The engine itself is exercised against a real vLLM in tests/test_vllm.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from srcal.serve.vllm_env import find_vllm_python, prepare_model_for_vllm, vllm_cpu_env

from srcal.serve.vllm_worker import VllmWorker, WorkerError


def test_prepare_model_renames_llava_vision_tower_once(tmp_path):
    """transformers 5.x saves `vision_tower.embeddings.*`; vLLM 0.32 needs `vision_tower.vision_model.*`."""
    from safetensors import safe_open

    from srcal.models.tiny import build_llava, build_qwen2_text, train_tokenizer

    tok = train_tokenizer(["a red circle in the top left.", "Answer: 3"] * 20, 300)
    llava = build_llava(tok, tmp_path / "llava", image_size=16, patch_size=8, vision_hidden=32, text_hidden=64,
                        text_heads=1)  # fmt: skip
    out = prepare_model_for_vllm(llava)
    assert out == tmp_path / "llava-vllm"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    with safe_open(str(llava / "model.safetensors"), "pt") as f:
        original = set(f.keys())
    tower = {k for k in keys if k.startswith("vision_tower.")}
    assert tower and all(k.startswith("vision_tower.vision_model.") for k in tower)
    assert {k for k in keys if not k.startswith("vision_tower.")} == {
        k for k in original if not k.startswith("vision_tower.")
    }
    assert len(keys) == len(original)
    assert (out / "config.json").read_text() == (llava / "config.json").read_text()
    assert (out / "tokenizer.json").exists() and (out / "processor_config.json").exists()
    # Idempotent: a converted copy is reused, and an already-converted dir needs nothing.
    stamp = (out / ".srcal-vllm-converted").stat().st_mtime_ns
    assert prepare_model_for_vllm(llava) == out
    assert (out / ".srcal-vllm-converted").stat().st_mtime_ns == stamp
    assert prepare_model_for_vllm(out) == out
    # Text models are served as they are.
    qwen = build_qwen2_text(tok, tmp_path / "qwen", hidden=64, heads=1)
    assert prepare_model_for_vllm(qwen) == qwen


def test_find_vllm_python_prefers_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SRCAL_VLLM_PYTHON", str(tmp_path / "py"))
    assert find_vllm_python() == tmp_path / "py"


def test_cpu_env_defaults_never_override_the_user(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    env = vllm_cpu_env({"EXTRA": "1"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["HF_HUB_OFFLINE"] == "1"
    assert env["EXTRA"] == "1"


def test_worker_start_failure_is_a_clear_error(tmp_path):
    """A python without vLLM: the worker reports init_failed and the parent raises with the reason."""
    worker = VllmWorker(
        {"model": str(tmp_path)}, python=sys.executable, startup_timeout_s=120, max_restarts=0
    )
    with pytest.raises(WorkerError, match="failed to start: .*vllm"):
        worker.start()
    assert not worker.alive()


def test_worker_protocol_with_a_fake_engine(tmp_path):
    """The parent side over real pipes, against a stand-in `vllm` package that echoes prompts: request ids,
    per-request errors, restart after the process dies, and shutdown. The real engine: tests/test_vllm.py."""
    fake = tmp_path / "fake" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\n__version__ = 'fake'\n"
        "class _MC:\n    max_model_len = 64\n"
        "class _E:\n    model_config = _MC()\n"
        "class SamplingParams:\n"
        "    def __init__(self, **kw):\n        self.__dict__.update(kw)\n"
        "class _C:\n"
        "    def __init__(self, ids, p):\n"
        "        self.token_ids = ids[-p.max_tokens:]; self.text = 'x'; self.cumulative_logprob = -1.0\n"
        "        self.logprobs = None; self.finish_reason = 'length'; self.stop_reason = None\n"
        "class _O:\n"
        "    def __init__(self, ids, p):\n"
        "        self.prompt_token_ids = ids; self.outputs = [_C(ids, p) for _ in range(p.n)]\n"
        "class _T:\n    def decode(self, ids, skip_special_tokens=True):\n        return 'x' * len(ids)\n"
        "class LLM:\n"
        "    def __init__(self, **kw):\n        self.llm_engine = _E()\n"
        "    def get_tokenizer(self):\n        return _T()\n"
        "    def generate(self, prompts, params, lora_request=None, use_tqdm=False):\n"
        "        if any(p['prompt_token_ids'][0] == 666 for p in prompts):\n"
        "            os._exit(9)\n"  # simulate a crash of the engine process
        "        return [_O(p['prompt_token_ids'], sp) for p, sp in zip(prompts, params)]\n"
    )
    env = {"PYTHONPATH": str(fake.parent)}
    worker = VllmWorker({"model": "m"}, python=sys.executable, env=env, startup_timeout_s=60, max_restarts=1)
    with worker:
        first_pid = worker.ping()
        res = worker.generate([
            {"prompt_token_ids": [1, 2, 3], "n": 2, "max_tokens": 2},
            {"prompt_token_ids": [1] * 70, "max_tokens": 2},
        ])  # fmt: skip
        assert [o["token_ids"] for o in res[0]["outputs"]] == [[2, 3], [2, 3]]
        assert res[0]["outputs"][0]["tokens_text"] == "xx"
        assert "exceeds the model's context of 64" in res[1]["error"]
        with pytest.raises(WorkerError, match="already restarted 1 times"):
            worker.generate([{"prompt_token_ids": [666], "max_tokens": 1}])  # dies, restarts, dies again
        assert worker.restarts == 1
        assert worker.ping() != first_pid  # a fresh worker serves the next request
    assert not worker.alive()
    assert json.loads(json.dumps(worker.info))["vllm_version"] == "fake"
    assert Path(worker.python) == Path(sys.executable)
