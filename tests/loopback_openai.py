"""OpenAI-compatible stand-ins for the three endpoints a real recipe talks to, as real HTTP servers on 127.0.0.1.

The real recipes call three endpoints: the RAP teacher (a large VLM: ``/v1/chat/completions`` with an
image part), the pair labeller (an LLM: ``/v1/chat/completions``, verdict read from one token's
log-probs) and the trained R-Scorer judge (``rscorer.serve: openai``: ``/v1/completions`` with vLLM's
``logprob_token_ids``). A 72B teacher and a 70B labeller cannot run in a test, so these servers answer
from the samples' ground truth, deterministically, in the wire format vLLM uses; the judge server runs the
judge this very run trained (``<run>/rscorer/judge``), loaded on its first request because it does not
exist yet when the run starts.

* :class:`Teacher`: checks that the request carries a decodable image and a question it knows, and
  replies with two sentences (one naming the image's size, so the reply depends on the image) and
  ``Answer: <the row's answer>``.
* :class:`Labeller`: finds the question and the two responses in the default labeller prompt and prefers
  the response whose ``Answer:`` line is right (C when both or neither are); the chosen letter gets
  log-prob log 0.8, the others log 0.1.
* :class:`JudgeServer`: one forward of the judge per prompt; the requested token ids' log-probs under
  the full-vocabulary softmax, as vLLM returns them.

Every server records the requests it got (``.requests``) so tests can assert what was sent.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from http_utils import send_json


class _Server:
    """A ThreadingHTTPServer on a free loopback port; subclasses implement ``handle(path, body) -> reply``."""

    model = "stand-in"

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with owner.lock:
                    owner.requests.append({"path": self.path, "body": body})
                try:
                    reply = owner.handle(self.path, body)
                except _BadRequest as e:
                    send_json(self, {"error": {"message": str(e), "type": "BadRequestError"}}, 400)
                    return
                send_json(self, reply)

            def do_GET(self):  # noqa: N802
                send_json(self, {"object": "list", "data": [{"id": owner.model, "object": "model"}]})

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, path: str, body: dict) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError


class _BadRequest(ValueError):
    pass


def _match_question(text: str, answers: dict[str, str]) -> str:
    """The longest known question contained in ``text`` ("bar 1" must not win over "bar 11")."""
    hits = [q for q in answers if q in text]
    if not hits:
        raise _BadRequest(f"no known question in the prompt: {text[:120]!r}")
    return max(hits, key=len)


def _chat_reply(content: str, logprobs: dict | None = None, finish: str = "stop") -> dict:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "chatcmpl-standin", "object": "chat.completion", "model": "stand-in", "choices": [choice]}


class Teacher(_Server):
    """The RAP teacher (a VLM): ``answers`` maps each sample's question text to its answer."""

    model = "teacher"

    def __init__(self, answers: dict[str, str], prefix: str = "Answer:"):
        super().__init__()
        self.answers, self.prefix = answers, prefix
        self.image_sizes: list[tuple[int, int]] = []

    def handle(self, path: str, body: dict) -> dict:
        from PIL import Image

        if not path.endswith("/chat/completions"):
            raise _BadRequest(f"teacher: unexpected path {path}")
        parts = body["messages"][-1]["content"]
        if not isinstance(parts, list):
            raise _BadRequest("teacher: the user turn has no content parts (no image)")
        urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        text = " ".join(p["text"] for p in parts if p.get("type") == "text")
        if len(urls) != 1 or not urls[0].startswith("data:image/"):
            raise _BadRequest(f"teacher: expected one inline image, got {len(urls)}")
        with Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1]))) as im:
            im.load()
            size = im.size
        with self.lock:
            self.image_sizes.append(size)
        answer = self.answers[_match_question(text, self.answers)]
        rap = (f"The picture is {size[0]} by {size[1]} pixels. "
               f"Its content points to {answer}.\n{self.prefix} {answer}")
        return _chat_reply(rap)


_PAIR = re.compile(r"Response A:\n(?P<a>.*?)\n\nResponse B:\n(?P<b>.*?)\n\nWhich", re.S)


class Labeller(_Server):
    """The pair labeller (an LLM): the right answer wins; verdict as one token's log-probs."""

    model = "labeller"

    def __init__(self, answers: dict[str, str], prefix: str = "Answer:"):
        super().__init__()
        self.answers, self.prefix = answers, prefix
        self.verdicts: list[str] = []

    def _right(self, response: str, truth: str) -> bool:
        from srcal.data.rap import parse_rap

        got = parse_rap(response, self.prefix).answer
        return got is not None and " ".join(got.split()).casefold() == " ".join(truth.split()).casefold()

    def handle(self, path: str, body: dict) -> dict:
        if not path.endswith("/chat/completions") or body.get("max_tokens") != 1 or not body.get("logprobs"):
            raise _BadRequest("labeller: expected a one-token chat completion with logprobs")
        text = body["messages"][-1]["content"]
        m = _PAIR.search(text)
        if not m:
            raise _BadRequest("labeller: prompt does not hold 'Response A:' … 'Response B:'")
        truth = self.answers[_match_question(text, self.answers)]
        ra, rb = self._right(m["a"], truth), self._right(m["b"], truth)
        verdict = "A" if ra and not rb else "B" if rb and not ra else "C"
        with self.lock:
            self.verdicts.append(verdict)
        lp = {x: math.log(0.8 if x == verdict else 0.1) for x in "ABC"}
        top = [{"token": x, "logprob": lp[x], "bytes": list(x.encode())} for x in sorted("ABC", key=lambda x: -lp[x])]
        content = [{"token": verdict, "logprob": lp[verdict], "bytes": list(verdict.encode()),
                    "top_logprobs": top[: int(body.get("top_logprobs") or 0)]}]
        return _chat_reply(verdict, {"content": content}, finish="length")


class JudgeServer(_Server):
    """The trained R-Scorer behind ``/v1/completions``, loaded from ``judge_dir`` on the first request."""

    model = "judge"

    def __init__(self, judge_dir: str | Path):
        super().__init__()
        self.judge_dir = Path(judge_dir)
        self._model = self._tok = None

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not (self.judge_dir / "config.json").exists():
                raise _BadRequest(f"judge: {self.judge_dir} holds no trained judge yet")
            self._tok = AutoTokenizer.from_pretrained(self.judge_dir)
            self._model = AutoModelForCausalLM.from_pretrained(self.judge_dir, dtype=torch.float32).eval()
        return self._model, self._tok

    def handle(self, path: str, body: dict) -> dict:
        import torch

        if not path.endswith("/completions") or path.endswith("/chat/completions"):
            raise _BadRequest(f"judge: unexpected path {path}")
        if body.get("max_tokens") != 1:
            raise _BadRequest("judge: expected max_tokens 1")
        with self.lock:  # one forward at a time: torch threads are shared
            model, tok = self._load()
            ids = tok(body["prompt"], add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logp = model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
        want = [int(i) for i in body.get("logprob_token_ids") or []]
        k = int(body.get("logprobs") or 0)
        if want and k != len(want):
            raise _BadRequest("judge: logprobs must equal len(logprob_token_ids) (vLLM's rule)")
        chosen = want or logp.topk(max(1, k)).indices.tolist()
        top = {tok.decode([i]): float(logp[i]) for i in chosen}
        best = int(logp.argmax())
        lp = {"tokens": [tok.decode([best])], "token_logprobs": [float(logp[best])], "top_logprobs": [top],
              "text_offset": [0]}
        return {"id": "cmpl-standin", "object": "text_completion", "model": self.model,
                "choices": [{"index": 0, "text": tok.decode([best]), "logprobs": lp, "finish_reason": "length"}]}
