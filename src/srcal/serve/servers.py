"""An OpenAI-compatible server as a local process: started, waited for, and always stopped.

One launcher for every server srcal or its tests start: the judge a score step serves from its artifact
(``judge_serving=in-step-vllm``, and ``srcal run`` when ``rscorer.serve: openai`` has no URL), and the vLLM
servers the tests talk to (tests/vllm_utils.py). The process gets its own session, so stopping it also
stops vLLM's engine-core child.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from srcal.errors import ServeError


def vllm_server_argv(model_dir: str, port: int, served_name: str = "judge", extra: list[str] | None = None,
                     python: str | None = None) -> list[str]:
    """The same server the KServe ServingRuntime runs, as a local process: with the vLLM environment's
    python (``srcal.serve.vllm_env.find_vllm_python``: ``$SRCAL_VLLM_PYTHON`` or ``.venv-vllm``), else this
    one (the vLLM image, where vLLM is installed beside srcal)."""
    from srcal.serve.vllm_env import find_vllm_python

    python = python or str(find_vllm_python() or sys.executable)
    return [python, "-m", "vllm.entrypoints.openai.api_server", f"--model={model_dir}",
            f"--served-model-name={served_name}", "--host=127.0.0.1", f"--port={port}", *(extra or [])]


def start_server(argv: list[str], port: int, *, ready_path: str = "/v1/models", timeout_s: float = 600,
                 log_path: str | Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start an OpenAI-compatible server process and wait until ``ready_path`` answers 200 (model loaded).

    Fails fast with :class:`ServeError` (naming the log) when the process exits first or is not ready after
    ``timeout_s``; the process is stopped before raising, so a failed start leaves nothing behind.
    """
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    finally:
        if log_path:
            out.close()  # the child holds its own descriptor
    base = f"http://127.0.0.1:{port}"
    where = f" (log: {log_path})" if log_path else ""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServeError(f"judge server exited with code {proc.returncode} before it was ready: "
                             f"{' '.join(argv)}{where}")
        try:
            with urllib.request.urlopen(base + ready_path, timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            raise ServeError(f"judge server not ready on {base}{ready_path} after {timeout_s:.0f}s{where}")
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM the server's whole session (vLLM's engine core is a child process), SIGKILL after
    ``timeout_s``; a process that is already gone is fine."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def local_openai_server(argv: list[str], port: int, *, ready_path: str = "/v1/models", timeout_s: float = 600,
                        log_path: str | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run an OpenAI-compatible server process for the duration of the block; yield ``http://…/v1``.
    It is always stopped (:func:`stop_server`), so a failing score step leaves no server behind."""
    proc = start_server(argv, port, ready_path=ready_path, timeout_s=timeout_s, log_path=log_path, env=env)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_server(proc)


@contextlib.contextmanager
def serve_judge_locally(judge_dir: str | Path, *, gpu: bool, log_path: str | None = None,
                        timeout_s: float = 600) -> Iterator[str]:
    """Serve a trained judge artifact with vLLM's OpenAI server for the duration of the block; yield its
    ``…/v1`` URL. Used by the pipeline's ``in-step-vllm`` score steps and by ``srcal run`` when the recipe
    says ``rscorer.serve: openai`` without a URL (the judge it just trained, served as a real endpoint).

    Without a GPU, vLLM-CPU needs fp32, eager mode and its CPU environment
    (:func:`srcal.serve.vllm_env.vllm_cpu_env`).
    """
    from srcal.run.distributed import free_port
    from srcal.serve.vllm_env import vllm_cpu_env

    port = free_port()
    # vLLM refuses a --max-model-len above the checkpoint's max_position_embeddings (tiny judges have 512).
    cfg = json.loads((Path(judge_dir) / "config.json").read_text()) if (Path(judge_dir) / "config.json").exists() else {}
    max_len = min(1024, int(cfg.get("max_position_embeddings") or 1024))
    cpu = [] if gpu else ["--dtype=float32", "--enforce-eager", f"--max-model-len={max_len}"]
    argv = vllm_server_argv(str(judge_dir), port, extra=cpu)
    with local_openai_server(argv, port, env=None if gpu else vllm_cpu_env(), log_path=log_path,
                             timeout_s=timeout_s) as url:
        yield url
