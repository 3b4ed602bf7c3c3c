"""srcal.serve.client against a loopback HTTP server that injects the failures real endpoints produce.

The server is stdlib ``http.server`` in a thread on 127.0.0.1. Each request names a *scenario* in its
``model`` field; the scenario is a list of behaviours served in order (the last one repeats), so a test
states exactly what the endpoint does on try 1, 2, 3... and then asserts how many tries the client made
and what it reported.
"""

from __future__ import annotations

import base64
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from srcal.serve.client import (
    Failure,
    OpenAIClient,
    RequestFailed,
    backoff_delay,
    count_failures,
    image_part,
    label_probs,
    map_requests,
    user_message,
)

CLIENT_TIMEOUT_S = 0.3


def chat_ok(text: str = "It is red.\nAnswer: red") -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    }


def chat_logprobs(token: str, logprob: float, top: dict[str, float]) -> dict:
    return {
        "choices": [
            {
                "message": {"role": "assistant", "content": token},
                "logprobs": {
                    "content": [
                        {
                            "token": token,
                            "logprob": logprob,
                            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()],
                        }
                    ]
                },
            }
        ]
    }


class FaultyServer:
    """A loopback OpenAI-ish endpoint whose behaviour per scenario is scripted by the test."""

    def __init__(self):
        self.scripts: dict[str, list] = {}
        self.calls: dict[str, int] = {}
        self.bodies: dict[str, list[dict]] = {}
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = body.get("model", "")
                with server.lock:
                    n = server.calls.get(name, 0)
                    server.calls[name] = n + 1
                    server.bodies.setdefault(name, []).append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    script = server.scripts.get(name, ["ok"])
                    action = script[min(n, len(script) - 1)]
                try:
                    self.act(action)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def send(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def act(self, action):
                if isinstance(action, dict):  # a literal JSON body to return with 200
                    self.send(200, json.dumps(action).encode())
                elif isinstance(action, tuple) and action[0] == "status":
                    self.send(action[1], action[2].encode())
                elif action == "ok":
                    self.send(200, json.dumps(chat_ok()).encode())
                elif action == "slow_ok":
                    time.sleep(0.1)
                    self.send(200, json.dumps(chat_ok()).encode())
                elif action == "timeout":
                    time.sleep(CLIENT_TIMEOUT_S * 3)
                    self.close_connection = True
                elif action in ("500", "503"):
                    self.send(int(action), b'{"error": {"message": "engine restarting"}}')
                elif action == "429":
                    self.send(429, b'{"error": "slow down"}', {"Retry-After": "0"})
                elif action == "garbage":
                    self.send(200, b"<html>502 Bad Gateway</html>")
                elif action == "truncated":
                    full = json.dumps(chat_ok()).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(full)))
                    self.end_headers()
                    self.wfile.write(full[: len(full) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif action == "reset":
                    self.close_connection = True  # close without any response
                else:
                    raise AssertionError(f"unknown action {action!r}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def script(self, name: str, *actions) -> str:
        self.scripts[name] = list(actions)
        return name

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultyServer()
    yield s
    s.close()


def make_client(server: FaultyServer, **kw) -> OpenAIClient:
    kw = {
        "timeout_s": CLIENT_TIMEOUT_S,
        "retries": 3,
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
        "seed": 0,
        **kw,
    }
    return OpenAIClient(server.url, **kw)


def ask(client: OpenAIClient, scenario: str, **kw) -> str:
    client.model = scenario
    return client.chat_text([user_message("What colour?")], **kw)


@pytest.mark.parametrize("fault", ["500", "503", "garbage", "truncated", "timeout", "reset", "429"])
def test_success_after_two_failures(server, fault):
    """Two faulty answers then a good one: the caller gets the good one, the server saw exactly 3 tries."""
    name = server.script(f"s-{fault}", fault, fault, "ok")
    with make_client(server) as client:
        assert ask(client, name) == "It is red.\nAnswer: red"
    assert server.calls[name] == 3


@pytest.mark.parametrize(
    "fault, kind",
    [
        ("500", "http_500"),
        ("503", "http_503"),
        ("garbage", "bad_json"),
        ("truncated", "truncated"),
        ("timeout", "timeout"),
        ("reset", "truncated"),
    ],
)
def test_retries_exhausted_reports_kind_and_attempts(server, fault, kind):
    name = server.script(f"always-{fault}", fault)
    with make_client(server, retries=2) as client, pytest.raises(RequestFailed) as err:
        ask(client, name)
    failure = err.value.failure
    assert (failure.kind, failure.attempts) == (kind, 3)
    assert server.calls[name] == 3
    assert failure.reason


def test_client_error_is_not_retried(server):
    """A 400 means the request is wrong: retrying only wastes the endpoint's time."""
    name = server.script("bad-request", ("status", 400, '{"error": "max_tokens must be >= 1"}'))
    with make_client(server) as client, pytest.raises(RequestFailed) as err:
        ask(client, name)
    assert err.value.failure.kind == "http_400"
    assert err.value.failure.status == 400
    assert "max_tokens must be" in err.value.failure.reason
    assert err.value.failure.attempts == 1 and server.calls[name] == 1


def test_unparseable_answer_is_retried_then_reported(server):
    """The teacher's RAP parser raises ValueError: the request is retried, then fails as 'unparseable'."""

    def parse_rap(text: str) -> str:
        if "Answer:" not in text:
            raise ValueError("no 'Answer:' line")
        return text.split("Answer:")[1].strip()

    good = server.script("rap-late", chat_ok("I cannot tell."), chat_ok("It is blue.\nAnswer: blue"))
    bad = server.script("rap-never", chat_ok("I cannot tell."))
    with make_client(server, retries=2) as client:
        assert ask(client, good, parse=parse_rap) == "blue"
        with pytest.raises(RequestFailed) as err:
            ask(client, bad, parse=parse_rap)
    assert err.value.failure.kind == "unparseable"
    assert "no 'Answer:' line" in err.value.failure.reason
    assert server.calls[good] == 2 and server.calls[bad] == 3


def test_batch_keeps_going_and_keeps_order(server):
    names = [
        server.script("b0", "ok"),
        server.script("b1", "503"),
        server.script("b2", "garbage", "ok"),
        server.script("b3", ("status", 404, "no such model")),
        server.script("b4", "timeout"),
        server.script("b5", "ok"),
    ]
    done: list[int] = []
    with make_client(server, retries=1, concurrency=3) as client:

        def fn(name: str) -> str:
            if name == "b5":
                raise RuntimeError("bug in the caller's handling")
            return client.chat_text([user_message("q")], model=name)  # params override the default model

        results = client.map_requests(names, fn, on_done=lambda i, r: done.append(i))
    assert results[0] == "It is red.\nAnswer: red"
    assert results[2] == "It is red.\nAnswer: red"
    assert [type(r).__name__ for r in results] == ["str", "Failure", "str", "Failure", "Failure", "Failure"]
    assert (results[1].kind, results[1].attempts) == ("http_503", 2)
    assert results[3].kind == "http_404"
    assert results[4].kind == "timeout"
    assert results[5].kind == "error" and "bug in the caller" in results[5].reason
    assert not results[1]  # a Failure is falsy
    assert sorted(done) == list(range(6))
    assert count_failures(results) == {"http_503": 1, "http_404": 1, "timeout": 1, "error": 1}


def test_concurrency_limit_is_respected(server):
    name = server.script("slow", "slow_ok")
    with make_client(server, concurrency=2) as client:
        client.model = name
        results = client.map_requests(range(8), lambda _: client.chat_text([user_message("q")]))
    assert all(isinstance(r, str) for r in results)
    assert server.max_in_flight == 2  # bounded, and actually used


def test_api_key_goes_in_header_only(server, monkeypatch, caplog):
    secret = "sk-test-0123456789"
    monkeypatch.setenv("SRCAL_API_KEY", secret)
    name = server.script("auth", "503")
    client = make_client(server, retries=1)
    with caplog.at_level("DEBUG"), pytest.raises(RequestFailed) as err:
        ask(client, name)
    client.close()
    assert server.headers[-1]["Authorization"] == f"Bearer {secret}"
    assert secret not in repr(client)
    assert secret not in str(err.value) and secret not in err.value.failure.reason
    assert secret not in caplog.text


def test_openai_api_key_fallback(monkeypatch):
    monkeypatch.delenv("SRCAL_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    assert OpenAIClient("http://127.0.0.1:1/v1")._api_key == "sk-other"


def test_backoff_grows_exponentially_with_bounded_jitter():
    """base 1 s: try k waits in [2^k/2, 2^k], capped at max 5 s → [2.5, 5]."""
    rng = random.Random(0)
    for attempt, (lo, hi) in enumerate([(0.5, 1), (1, 2), (2, 4), (2.5, 5), (2.5, 5)]):
        waits = [backoff_delay(attempt, 1.0, 5.0, rng) for _ in range(200)]
        assert lo <= min(waits) and max(waits) <= hi
        assert max(waits) - min(waits) > (hi - lo) / 2  # jitter really spreads the waits


def test_label_probs_hand_computed():
    """Top-k: ' A' -1.0, 'A' -2.0, 'B' -1.5, 'x' -0.1, C missing.
    p(A) ∝ e^-1 + e^-2 = 0.36788 + 0.13534 = 0.50321; p(B) ∝ e^-1.5 = 0.22313; total 0.72634.
    → A 0.69280, B 0.30720, C 0."""
    probs, mass = label_probs([(" A", -1.0), ("A", -2.0), ("B", -1.5), ("x", -0.1)], ["A", "B", "C"])
    assert mass == pytest.approx(0.72634, abs=1e-5)
    assert probs == pytest.approx({"A": 0.69280, "B": 0.30720, "C": 0.0}, abs=1e-5)
    with pytest.raises(ValueError, match="no verdict label"):
        label_probs([("x", -0.1)], ["A", "B", "C"])


def test_verdict_chat_sends_logprob_token_ids_and_renormalises(server):
    resp = chat_logprobs("A", math.log(0.5), {"A": math.log(0.5), "B": math.log(0.3), "C": math.log(0.1)})
    name = server.script("judge", resp)
    with make_client(server) as client:
        client.model = name
        probs = client.verdict(
            ["A", "B", "C"], messages=[user_message("A or B?")], label_token_ids={"A": 7, "B": 8, "C": 9}
        )
    assert probs == pytest.approx({"A": 0.5 / 0.9, "B": 0.3 / 0.9, "C": 0.1 / 0.9})
    sent = server.bodies[name][0]
    assert sent["logprob_token_ids"] == [7, 8, 9] and sent["top_logprobs"] == 3
    assert sent["max_tokens"] == 1 and sent["logprobs"] is True
    assert client.supports_logprob_token_ids is True


def test_verdict_falls_back_when_server_rejects_logprob_token_ids(server):
    ok = chat_logprobs("B", math.log(0.6), {"B": math.log(0.6), "A": math.log(0.2), "zz": math.log(0.1)})
    name = server.script(
        "openai-proper", ("status", 400, '{"error": "Unrecognized argument: logprob_token_ids"}'), ok
    )
    with make_client(server) as client:
        client.model = name
        probs = client.verdict(
            ["A", "B", "C"], messages=[user_message("?")], label_token_ids={"A": 1, "B": 2, "C": 3}
        )
        assert client.supports_logprob_token_ids is False
    assert probs == pytest.approx({"A": 0.25, "B": 0.75, "C": 0.0})
    assert "logprob_token_ids" not in server.bodies[name][1] and server.bodies[name][1]["top_logprobs"] == 20


def test_verdict_completion_and_missing_label_is_failure_not_tie(server):
    comp = {
        "choices": [
            {
                "text": " B",
                "logprobs": {
                    "tokens": [" B"],
                    "token_logprobs": [math.log(0.4)],
                    "top_logprobs": [{" B": math.log(0.4), " A": math.log(0.4)}],
                },
            }
        ]
    }
    off_format = {
        "choices": [
            {
                "text": "?",
                "logprobs": {
                    "tokens": ["?"],
                    "token_logprobs": [-0.1],
                    "top_logprobs": [{"?": -0.1, "the": -3.0}],
                },
            }
        ]
    }
    good = server.script("comp", comp)
    bad = server.script("offformat", off_format)
    with make_client(server, retries=1) as client:
        client.model = good
        assert client.verdict(["A", "B", "C"], prompt="Scene ... Better:") == pytest.approx(
            {"A": 0.5, "B": 0.5, "C": 0}
        )
        assert server.bodies[good][0]["logprobs"] == 20 and server.bodies[good][0]["max_tokens"] == 1
        client.model = bad
        with pytest.raises(RequestFailed) as err:
            client.verdict(["A", "B", "C"], prompt="Scene ... Better:")
    assert err.value.failure.kind == "unparseable" and server.calls[bad] == 2


def test_image_part_is_a_base64_data_url(tmp_path):
    png = b"\x89PNG\r\n\x1a\nfake"
    path = tmp_path / "img.png"
    path.write_bytes(png)
    part = image_part(path)
    url = part["image_url"]["url"]
    assert part["type"] == "image_url" and url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png
    msg = user_message("What is it?", [path])
    assert [p["type"] for p in msg["content"]] == ["image_url", "text"]
    assert user_message("plain") == {"role": "user", "content": "plain"}


def test_map_requests_without_client_and_empty_input():
    assert map_requests([], lambda x: x) == []
    out = map_requests([1, 2, 3], lambda x: 10 // (x - 2), concurrency=2)
    assert out[0] == -10 and out[2] == 10
    assert isinstance(out[1], Failure) and out[1].kind == "error" and "ZeroDivisionError" in out[1].reason


def test_bad_settings_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="base_url is empty"):
        OpenAIClient("")
    with pytest.raises(ValueError, match="concurrency >= 1"):
        OpenAIClient("http://x/v1", concurrency=0)
