"""One client for every OpenAI-compatible endpoint srcal talks to: the RAP teacher and the R-Scorer judge.

Why one module: the teacher (a large VLM writing rationale-answer pairs, issue 4) and the judge
(R-Scorer served by vLLM/KServe, issue 6) fail the same ways — timeouts, 5xx while a pod restarts,
connection resets, truncated or garbage bodies — and need the same cure: bounded concurrency, retries
with exponential backoff and jitter, and a batch helper that records a typed failure for one bad item
instead of aborting a run of thousands.

What it promises:
- ``OpenAIClient.post`` returns parsed JSON or raises :class:`RequestFailed` after ``retries`` retries;
  the failure's ``kind`` says why (``timeout``, ``connect``, ``http_503``, ``bad_json``, ``truncated``,
  ``unparseable``, ...). 4xx errors other than 408/429 are not retried: the request itself is wrong.
- ``map_requests(items, fn)`` returns one entry per item, in order: ``fn``'s result or a
  :class:`Failure`. It never raises for one item.
- ``verdict`` reads label probabilities from a one-token generation's log-probs (never free text),
  using vLLM's ``logprob_token_ids`` extra when the caller knows the label token ids and the server
  accepts it (docs/vllm.md).
- The API key comes from the argument or ``SRCAL_API_KEY`` / ``OPENAI_API_KEY``, travels only in the
  ``Authorization`` header, and never appears in a log line, an exception or ``repr``.

httpx is imported lazily (extra ``serve``) so ``import srcal`` stays light.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import mimetypes
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Statuses worth retrying: the server (or a proxy in front of it) is overloaded, restarting or slow.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Failure:
    """A request that did not yield a result, kept in place of the result so a batch can go on.

    ``kind`` is a short stable category for counting (``timeout``, ``http_503``, ``unparseable``, ...);
    ``reason`` is a human-readable line (never contains the API key); ``attempts`` counts HTTP tries.
    """

    kind: str
    reason: str
    attempts: int = 0
    status: int | None = None

    def __bool__(self) -> bool:  # lets callers write `if result:` to skip failures
        return False


class RequestFailed(Exception):
    """Raised by the client when a request failed for good (retries exhausted or not retryable)."""

    def __init__(self, kind: str, reason: str, attempts: int, status: int | None = None):
        super().__init__(f"{kind}: {reason} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.failure = Failure(kind=kind, reason=reason, attempts=attempts, status=status)


class _Retryable(Exception):
    """Internal: one attempt failed in a way that a later attempt may fix."""

    def __init__(self, kind: str, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.kind, self.reason, self.status, self.retry_after = kind, reason, status, retry_after


def api_key_from_env() -> str | None:
    """The endpoint's API key: ``SRCAL_API_KEY`` first (ours), then the conventional ``OPENAI_API_KEY``."""
    return os.environ.get("SRCAL_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential, capped, with jitter.

    "Equal jitter": half the exponential step is fixed, half random, so waits still grow with each
    attempt while many clients that failed together (a pod restart) do not retry in lockstep.
    """
    step = min(max_s, base_s * (2.0**attempt))
    return step / 2.0 + (rng or random).uniform(0.0, step / 2.0)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OpenAIClient:
    """A thread-safe client for one OpenAI-compatible endpoint (``base_url`` ends in ``/v1``).

    ``concurrency`` bounds requests in flight across all threads; ``timeout_s`` bounds each connect,
    read and write of one attempt; ``retries`` is the number of retries after the first attempt.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "",
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seed: int | None = None,
    ):
        if not base_url:
            raise ValueError("OpenAIClient: base_url is empty; set the endpoint URL (…/v1) in the recipe")
        if concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"OpenAIClient: need concurrency >= 1, retries >= 0, timeout_s > 0; got {concurrency}, "
                f"{retries}, {timeout_s}"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._api_key = api_key if api_key is not None else api_key_from_env()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._rng = random.Random(seed)
        self._http = None
        self._http_lock = threading.Lock()
        # None = not yet known; False once the server rejected vLLM's `logprob_token_ids` extra.
        self.supports_logprob_token_ids: bool | None = None

    def __repr__(self) -> str:  # the key is deliberately absent
        return f"OpenAIClient({self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"

    # -- transport --------------------------------------------------------------------------------

    def _client(self):
        with self._http_lock:
            if self._http is None:
                import httpx

                headers = {"Content-Type": "application/json"}
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                self._http = httpx.Client(
                    timeout=httpx.Timeout(self.timeout_s),
                    limits=httpx.Limits(
                        max_connections=self.concurrency, max_keepalive_connections=self.concurrency
                    ),
                    headers=headers,
                )
            return self._http

    def close(self) -> None:
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _attempt(self, path: str, payload: Mapping[str, Any]) -> Any:
        """One HTTP try. Returns parsed JSON; raises _Retryable or RequestFailed (not retryable)."""
        import httpx

        url = f"{self.base_url}/{path.lstrip('/')}"
        try:
            with self._slots:
                resp = self._client().post(url, content=json.dumps(payload))
                body = resp.content  # read fully inside the slot: a truncated body raises here
        except httpx.TimeoutException as e:
            raise _Retryable(
                "timeout", f"no answer within {self.timeout_s:g} s ({type(e).__name__})"
            ) from None
        except httpx.RemoteProtocolError as e:
            # The peer closed mid-response: a truncated body or a dropped connection.
            raise _Retryable("truncated", f"connection closed mid-response: {_short(str(e))}") from None
        except (httpx.ConnectError, httpx.ReadError, httpx.WriteError) as e:
            raise _Retryable("connect", f"{type(e).__name__}: {_short(str(e))}") from None
        except httpx.TransportError as e:
            raise _Retryable("transport", f"{type(e).__name__}: {_short(str(e))}") from None
        status = resp.status_code
        if status >= 400:
            detail = _short(body.decode("utf-8", "replace"))
            if status in RETRY_STATUSES:
                raise _Retryable(f"http_{status}", f"HTTP {status}: {detail}", status, _retry_after(resp))
            raise RequestFailed(f"http_{status}", f"HTTP {status} from {path}: {detail}", 0, status)
        try:
            return json.loads(body)
        except ValueError:
            raise _Retryable(
                "bad_json", f"unparseable JSON body: {_short(body.decode('utf-8', 'replace'))!r}"
            )

    def post(self, path: str, payload: Mapping[str, Any], parse: Callable[[Any], T] | None = None) -> T | Any:
        """POST ``payload`` to ``path`` with retries; return ``parse(json)`` (or the JSON itself).

        ``parse`` turns the body into the caller's result and raises ``ValueError`` (or KeyError,
        IndexError, TypeError) when the answer is unusable — an unparseable RAP, a missing verdict —
        which is retried like a server error, because a sampled answer or a restarted server may do
        better next time. After the last retry it raises :class:`RequestFailed` with the last reason.
        """
        last: _Retryable | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                wait = backoff_delay(attempt - 1, self.backoff_s, self.backoff_max_s, self._rng)
                if last is not None and last.retry_after is not None:
                    wait = max(wait, min(last.retry_after, self.backoff_max_s))
                log.info("retry %d/%d of %s after %s (%.2f s)", attempt, self.retries, path, last.kind, wait)
                time.sleep(wait)
            try:
                data = self._attempt(path, payload)
                return parse(data) if parse is not None else data
            except _Retryable as e:
                last = e
            except RequestFailed as e:
                raise RequestFailed(e.failure.kind, e.failure.reason, attempt + 1, e.failure.status) from None
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = _Retryable("unparseable", f"{type(e).__name__}: {_short(str(e))}")
        assert last is not None
        raise RequestFailed(last.kind, last.reason, self.retries + 1, last.status)

    # -- OpenAI endpoints ------------------------------------------------------------------------

    def chat(
        self, messages: Sequence[Mapping[str, Any]], *, parse: Callable[[Any], T] | None = None, **params
    ):
        """``POST /chat/completions``; ``params`` pass through (max_tokens, temperature, vLLM extras)."""
        payload = {"model": self.model, "messages": list(messages), **params}
        return self.post("chat/completions", payload, parse)

    def complete(self, prompt: str | Sequence[int], *, parse: Callable[[Any], T] | None = None, **params):
        """``POST /completions`` with a text or token-id prompt."""
        payload = {"model": self.model, "prompt": prompt, **params}
        return self.post("completions", payload, parse)

    def chat_text(
        self, messages: Sequence[Mapping[str, Any]], *, parse: Callable[[str], T] | None = None, **params
    ) -> T | str:
        """The assistant's text of the first choice, optionally passed through ``parse`` (retried on error).

        A reply with empty content or ``finish_reason == "length"`` is returned as is; the caller's
        ``parse`` decides whether it is usable.
        """

        def _text(data: Any):
            content = data["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"choice has no text content: {_short(repr(content))}")
            return parse(content) if parse is not None else content

        return self.chat(messages, parse=_text, **params)

    def verdict(
        self,
        labels: Sequence[str],
        *,
        prompt: str | Sequence[int] | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        label_token_ids: Mapping[str, int] | None = None,
        top_logprobs: int = 20,
        **params,
    ) -> dict[str, float]:
        """Probability of each verdict label, read from one generated token's log-probs.

        Give a raw ``prompt`` (``/completions``, what a text judge such as R-Scorer uses) or chat
        ``messages`` (``/chat/completions``). With ``label_token_ids`` (label → the id of its token in the
        judge's tokenizer) the request carries vLLM's ``logprob_token_ids`` so every label's log-prob comes
        back even when it is outside the top-k; servers that reject the extra get top-k instead (once
        detected, for the rest of this client's life). Probabilities are renormalised over the labels; a
        label not returned gets 0; if no label is returned at all the read is retried, then fails as
        ``unparseable`` — never silently a tie.
        """
        if (prompt is None) == (messages is None):
            raise ValueError("verdict: give exactly one of prompt= or messages=")
        labels = list(labels)
        use_ids = bool(label_token_ids) and self.supports_logprob_token_ids is not False
        body: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, **params}
        if use_ids:
            ids = [int(label_token_ids[label]) for label in labels]  # KeyError names a missing label
            body["logprob_token_ids"] = ids
            k = len(ids)  # vLLM requires logprobs == len(logprob_token_ids)
        else:
            k = top_logprobs
        if messages is not None:
            body.update(logprobs=True, top_logprobs=k)
            parse = _chat_label_probs(labels)
            call = lambda b: self.chat(messages, parse=parse, **b)
        else:
            body.update(logprobs=k)
            parse = _completion_label_probs(labels)
            call = lambda b: self.complete(prompt, parse=parse, **b)
        try:
            probs = call(body)
        except RequestFailed as e:
            if use_ids and e.failure.kind == "http_400" and "logprob_token_ids" in e.failure.reason:
                self.supports_logprob_token_ids = False
                log.warning(
                    "endpoint rejects logprob_token_ids; falling back to top_logprobs=%d", top_logprobs
                )
                return self.verdict(
                    labels, prompt=prompt, messages=messages, top_logprobs=top_logprobs, **params
                )
            raise
        if use_ids:
            self.supports_logprob_token_ids = True
        return probs

    # -- batches ---------------------------------------------------------------------------------

    def map_requests(
        self,
        items: Iterable[T],
        fn: Callable[[T], R],
        *,
        on_done: Callable[[int, R | Failure], None] | None = None,
    ) -> list[R | Failure]:
        """Run ``fn`` over ``items`` with this client's concurrency; see :func:`map_requests`."""
        return map_requests(items, fn, concurrency=self.concurrency, on_done=on_done)


def map_requests(
    items: Iterable[T],
    fn: Callable[[T], R],
    *,
    concurrency: int = 8,
    on_done: Callable[[int, R | Failure], None] | None = None,
) -> list[R | Failure]:
    """Apply ``fn`` to every item on ``concurrency`` threads; one result or :class:`Failure` per item.

    Never raises for one item: :class:`RequestFailed` becomes its ``Failure``; any other exception
    becomes ``Failure("error", ...)`` so a bug in one item's handling is visible, counted and does not
    lose the rest of the batch. ``on_done(index, result)`` is called from the caller's thread as each
    item finishes (in completion order), so a stage can append to its output as it goes and resume
    from what it wrote after a crash. Results are returned in input order.
    """
    items = list(items)
    results: list[R | Failure] = [Failure("pending", "not run")] * len(items)

    def run(item: T) -> R | Failure:
        try:
            return fn(item)
        except RequestFailed as e:
            return e.failure
        except Exception as e:  # noqa: BLE001 — one bad item must not stop the batch
            return Failure("error", f"{type(e).__name__}: {_short(str(e))}")

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items) or 1))) as pool:
        futures = {pool.submit(run, item): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_done is not None:
                on_done(i, results[i])
    return results


def count_failures(results: Iterable[Any]) -> dict[str, int]:
    """``{kind: count}`` over the failures in a ``map_requests`` result list (for summary.json)."""
    counts: dict[str, int] = {}
    for r in results:
        if isinstance(r, Failure):
            counts[r.kind] = counts.get(r.kind, 0) + 1
    return counts


# -- verdict log-prob parsing (pure) ---------------------------------------------------------------


def label_probs(
    token_logprobs: Iterable[tuple[str, float]], labels: Sequence[str]
) -> tuple[dict[str, float], float]:
    """Renormalise one position's token log-probs onto ``labels``; return ``(probs, label_mass)``.

    A token counts for a label when its text, stripped of whitespace, equals the label: BPE tokenizers
    often have both ``"A"`` and ``" A"``, and both mean the same verdict, so their probabilities add.
    ``label_mass`` is the total probability the judge put on any label (before renormalising), a
    measure of how on-format the read was. Raises ValueError when no label appears.
    """
    mass = {label: 0.0 for label in labels}
    seen: set[str] = set()
    for token, logprob in token_logprobs:
        key = token.strip()
        if key in mass and token not in seen and logprob is not None and math.isfinite(logprob):
            seen.add(token)  # a token listed twice (sampled + top-k) counts once
            mass[key] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0.0:
        raise ValueError(f"no verdict label among the returned tokens (labels {list(labels)})")
    return {label: p / total for label, p in mass.items()}, total


def _chat_label_probs(labels: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    def parse(data: Any) -> dict[str, float]:
        first = data["choices"][0]["logprobs"]["content"][0]
        pairs = [(t["token"], t["logprob"]) for t in first.get("top_logprobs") or []]
        pairs.append((first["token"], first["logprob"]))
        return label_probs(pairs, labels)[0]

    return parse


def _completion_label_probs(labels: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    def parse(data: Any) -> dict[str, float]:
        lp = data["choices"][0]["logprobs"]
        pairs = list((lp.get("top_logprobs") or [{}])[0].items())
        if lp.get("tokens"):
            pairs.append((lp["tokens"][0], lp["token_logprobs"][0]))
        return label_probs(pairs, labels)[0]

    return parse


def _retry_after(resp) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


# -- multimodal messages ---------------------------------------------------------------------------


def image_part(image: str | Path | bytes, mime: str | None = None) -> dict[str, Any]:
    """An ``image_url`` content part carrying the image inline as a base64 data URL.

    Inline rather than by URL because the endpoint (a KServe pod, a hosted API) cannot read our
    artifact store; PNG/JPEG bytes are sent as they are, never re-encoded.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        data = path.read_bytes()
        mime = mime or mimetypes.guess_type(path.name)[0] or "image/png"
    else:
        data, mime = image, mime or "image/png"
    return {
        "type": "image_url",
        "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"},
    }


def user_message(text: str, images: Sequence[str | Path | bytes] = ()) -> dict[str, Any]:
    """A user turn with the images first, then the text (the order LLaVA-style chat templates expect)."""
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [*(image_part(im) for im in images), {"type": "text", "text": text}]}
