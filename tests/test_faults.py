"""Injected faults on loopback (tests/faultproxy.py): S3 between srcal.run.store and the moto server, and the
teacher / labeller / judge endpoints between srcal.serve.client and a stub OpenAI server.

What must hold under every fault: the operation is retried and succeeds, and an artifact is never read as
complete unless every byte matches its completion marker. Each row of docs/reliability.md ("Injected
faults") names the test here that injects it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from pathlib import Path

import pytest
from faultproxy import FaultProxy

from srcal import stages
from srcal.run import store
from srcal.config import load_recipe

# Three kinds of file a stage writes: a JSONL table, a binary image, and (multipart cases) a weights file
# above the multipart threshold (6 MiB with 5 MiB parts: two parts, the least moto accepts).
SMALL = {"rft.jsonl": b"".join(b'{"id": "s%04d", "q": "How many circles?"}\n' % i for i in range(400)),
         "images/s0001.png": bytes(range(256)) * 80}
MULTIPART_ENV = {"SRCAL_S3_MULTIPART_THRESHOLD": str(5 << 20), "SRCAL_S3_MULTIPART_CHUNKSIZE": str(5 << 20)}


def _big() -> bytes:
    return hashlib.sha256(b"seed").digest() * (6 * (1 << 20) // 32)


def _write(d: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def _read(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != store.MARKER}


@pytest.fixture
def faulty_s3(s3_bucket, monkeypatch, tmp_path):
    """The session's moto server behind a FaultProxy; every srcal.run.store call in the test goes through it."""
    proxy = FaultProxy(os.environ["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("SRCAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SRCAL_S3_READ_TIMEOUT", "1")  # a reply slower than 1 s counts as lost (cases *slow*)
    yield proxy, f"{s3_bucket}/faults-{uuid.uuid4().hex[:8]}"
    proxy.close()


# (id, phase, rule, multipart): phase "publish" injects while the artifact is uploaded, "materialize" while
# a fresh cache downloads it. Each rule fires at least once (asserted), then the proxy forwards cleanly.
# Ids in CI_CASES run in the default suite (each fault kind at least once, the quick variants); the rest
# are slow-marked: mostly botocore's backoff (up to 2^n s per retry) waiting out the longer bursts.
CI_CASES = {"reset-mid-upload", "500-burst-any", "put-answer-lost", "listing-truncated", "slow-past-timeout-upload",
            "reset-mid-download", "truncated-marker", "corrupt-with-checksum", "corrupt-no-checksum"}
S3_CASES = [
    ("reset-mid-upload", "publish", dict(kind="reset_upload", method="PUT", path=r"rft\.jsonl", times=2), False),
    ("reset-mid-upload-part", "publish", dict(kind="reset_upload", method="PUT", path="partNumber=2", times=2),
     True),
    ("503-burst-upload", "publish", dict(kind="status", status=503, method="PUT", times=3), False),
    ("500-burst-any", "publish", dict(kind="status", status=500, times=4), False),
    ("503-burst-multipart-start", "publish", dict(kind="status", status=503, method="POST", path=r"\?uploads",
                                                 times=2), True),
    ("put-answer-lost", "publish", dict(kind="truncate", method="PUT", path=r"rft\.jsonl", times=2), False),
    ("complete-answer-truncated", "publish", dict(kind="truncate", method="POST", path="uploadId", times=1), True),
    ("listing-truncated", "publish", dict(kind="truncate", method="GET", path="list-type", times=1), False),
    ("slow-within-timeout", "publish", dict(kind="slow", delay=0.3, times=6), False),
    ("slow-past-timeout-upload", "publish", dict(kind="slow", delay=2.5, method="PUT", times=1), False),
    ("reset-mid-download", "materialize", dict(kind="reset_download", method="GET", path=r"rft\.jsonl", times=2),
     False),
    ("reset-mid-download-range", "materialize", dict(kind="reset_download", method="GET", path="big.bin",
                                                     times=2), True),
    ("truncated-body", "materialize", dict(kind="truncate", method="GET", path=r"s0001\.png", times=2), False),
    ("truncated-marker", "materialize", dict(kind="truncate", method="GET", path=store.MARKER, times=1), False),
    ("503-burst-download", "materialize", dict(kind="status", status=503, method="GET", times=3), False),
    ("slow-past-timeout-download", "materialize", dict(kind="slow", delay=2.5, method="GET", path=r"rft\.jsonl",
                                                       times=1), False),
    ("corrupt-with-checksum", "materialize", dict(kind="corrupt", method="GET", path=r"rft\.jsonl", times=1),
     False),
    ("corrupt-no-checksum", "materialize", dict(kind="corrupt", method="GET", path=r"rft\.jsonl", times=1,
                                                strip_checksums=True), False),
]


@pytest.mark.parametrize("phase, rule, multipart", [
    pytest.param(*c[1:], id=c[0], marks=() if c[0] in CI_CASES else pytest.mark.slow) for c in S3_CASES])
def test_s3_fault_is_retried_and_the_artifact_is_whole(faulty_s3, monkeypatch, tmp_path, phase, rule, multipart):
    """Publish, then materialize into a fresh cache, with one kind of fault injected in one of the two
    phases: both succeed, the fault fired, and the bytes read back equal the bytes published."""
    proxy, uri = faulty_s3
    files = {**SMALL, **({"big.bin": _big()} if multipart else {})}
    for k, v in (MULTIPART_ENV if multipart else {}).items():
        monkeypatch.setenv(k, v)
    src = _write(tmp_path / "src", files)
    if phase == "publish":
        proxy.add(**rule)
    marker = store.publish(src, uri, {"resume_key": "k", "stage": "faults"})
    assert store.is_complete(uri)
    if phase == "materialize":
        proxy.add(**rule)
    local = store.materialize(uri)
    assert proxy.fired(rule["kind"]) >= 1, f"the fault never fired; requests: {proxy.requests}"
    assert _read(local) == files
    assert store.hash_dir(local) == marker["hash"] == store.artifact_hash(uri)


def test_corrupted_artifact_is_refused_not_read(faulty_s3, tmp_path):
    """A body corrupted on every read (no checksum header to catch it): after the one re-fetch the marker's
    sha256 still disagrees, so materialize refuses, and no cache entry appears."""
    proxy, uri = faulty_s3
    store.publish(_write(tmp_path / "src", SMALL), uri, {"resume_key": "k", "stage": "faults"})
    proxy.add("corrupt", method="GET", path=r"rft\.jsonl", times=None, strip_checksums=True)
    with pytest.raises(store.StoreError, match="do not match the completion marker"):
        store.materialize(uri)
    assert proxy.fired("corrupt") == 2, "one download and one re-fetch"
    assert not any((tmp_path / "cache" / "artifacts").glob("*")), "nothing half-read is left as a cache entry"


def test_reader_never_sees_a_mix_while_a_faulty_republish_runs(faulty_s3, tmp_path):
    """v1 is published; v2 (same file names, other bytes) replaces it through slow, resetting PUTs while a
    reader materializes in a loop, each time into a fresh cache. Every read is exactly v1, exactly v2, or
    "not a finished artifact" — never a mix — and the window without a marker was actually observed."""
    proxy, uri = faulty_s3
    v1 = {f"part{i}.jsonl": b'{"v": 1, "i": %d}\n' % i * 50 for i in range(6)}
    v2 = {f"part{i}.jsonl": b'{"v": 2, "i": %d}\n' % i * 50 for i in range(6)}
    store.publish(_write(tmp_path / "v1", v1), uri, {"resume_key": "1", "stage": "faults"})
    _write(tmp_path / "v2", v2)
    proxy.add("reset_upload", method="PUT", path="part3", times=1)
    proxy.add("slow", method="PUT", delay=0.25, times=None)
    errors: list[BaseException] = []

    def republish():
        try:
            store.publish(tmp_path / "v2", uri, {"resume_key": "2", "stage": "faults"})
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    writer = threading.Thread(target=republish)
    writer.start()
    seen = []
    i = 0
    while writer.is_alive() or not seen or seen[-1] != "v2":
        i += 1
        os.environ["SRCAL_CACHE_DIR"] = str(tmp_path / f"cache-{i}")  # force a real download each time
        try:
            got = _read(store.materialize(uri))
            seen.append({json.dumps(sorted(v1.items()), default=str): "v1"}.get(
                json.dumps(sorted(got.items()), default=str), "v2" if got == v2 else "MIX"))
        except store.StoreError as e:
            seen.append("absent" if "not a finished artifact" in str(e) else f"refused: {e}")
        assert i < 400, "reader loop did not settle"
    writer.join()
    assert not errors, errors
    assert "MIX" not in seen and all(s in ("v1", "v2", "absent") or s.startswith("refused") for s in seen), seen
    assert "absent" in seen or any(s.startswith("refused") for s in seen), f"no window observed: {seen}"
    assert seen[-1] == "v2" and proxy.fired("reset_upload") == 1


# ------------------------------------------------------------------------------- real stages, S3 + labeller

# Real stages at sizes that run in seconds (see test_components.SMOKE for the whole graph).
_STAGE_SIZES = ["data.rft_size=16", "data.calib_size=8", "data.eval_size=8", "data.base_train_size=16",
                "rscorer.n_train_pairs=16", "rscorer.n_heldout_pairs=6"]


def test_real_stages_publish_and_materialize_through_faults(faulty_s3, monkeypatch, tmp_path, caplog):
    """Stage ``data`` publishes to S3 while uploads are reset, answered 503 and slowed; stage ``rscorer-data``
    then materializes it into an empty cache while downloads are reset, truncated and corrupted, and labels
    its pairs with an OpenAI-compatible labeller whose endpoint answers 503, resets, truncates and stalls.
    Both finish; the data artifact read back equals one built without faults (file by file, sha256), and no
    pair was lost to the labeller."""
    from test_client import FaultyServer, chat_logprobs

    proxy, root = faulty_s3
    local = str(tmp_path / "clean" / "data")
    recipe = load_recipe("tiny", _STAGE_SIZES)
    stages.execute("data", recipe, {}, local)  # the reference, no network

    proxy.add("reset_upload", method="PUT", path=r"images/", every=7, times=3)
    proxy.add("status", status=503, method="PUT", every=5, times=3)
    proxy.add("slow", method="PUT", delay=0.2, every=4, times=4)
    data_uri = f"{root}/data"
    stages.execute("data", recipe, {}, data_uri)
    up_faults = proxy.fired()
    assert up_faults == 10, proxy.events

    proxy.clear()
    proxy.add("reset_download", method="GET", path=r"images/", every=9, times=2)
    proxy.add("truncate", method="GET", path=r"\.jsonl", times=2)
    proxy.add("corrupt", method="GET", path=r"images/", every=5, times=2, strip_checksums=True)
    server = FaultyServer()
    server.script("labeller", chat_logprobs("A", -0.3, {"A": -0.3, "B": -1.5, "C": -3.0}))
    endpoint = FaultProxy(server.url.removesuffix("/v1"))
    endpoint.add("status", status=503, method="POST", every=3, times=3)
    endpoint.add("reset_upload", method="POST", every=4, times=2)
    endpoint.add("truncate", method="POST", every=5, times=2)
    endpoint.add("reset_download", method="POST", every=6, times=2)
    endpoint.add("slow", method="POST", delay=1.5, every=7, times=1)
    try:
        lab = load_recipe("tiny", [*_STAGE_SIZES, "labeller.kind=openai", f"labeller.url={endpoint.url}/v1",
                                   "labeller.model=labeller", "labeller.timeout_s=1", "labeller.retries=3"])
        with caplog.at_level(logging.WARNING):
            summary = stages.execute("rscorer-data", lab, {"data": data_uri}, f"{root}/rscorer-data")
    finally:
        endpoint.close()
        server.close()
    assert proxy.fired() - up_faults == 6, proxy.events
    assert {e[0] for e in endpoint.events} == {"status", "reset_upload", "truncate", "reset_download", "slow"}
    assert not [r for r in caplog.records if "labeller failed" in r.getMessage()]
    assert summary["counts"]["train_pairs"] == 16 and summary["counts"]["heldout_pairs"] == 6
    assert store.is_complete(f"{root}/rscorer-data")
    clean = store.read_marker(local)["files"]
    published = store.read_marker(data_uri)["files"]
    same = {k for k in clean if k != "summary.json"}
    assert {k: published[k] for k in same} == {k: clean[k] for k in same}
    assert store.file_digests(store.materialize(data_uri)) == published


# --------------------------------------------------------------------------------- teacher and judge


def test_teacher_endpoint_faults_lose_no_sample(tmp_path):
    """The RAP teacher (``teacher.kind: openai``) behind a proxy that answers 503, resets mid-request and
    mid-answer, truncates and stalls: every sample still gets exactly one teacher reply (no
    ``teacher_failed`` drops), and each reply is cached once."""
    from test_client import FaultyServer, chat_ok

    from srcal.world import shapes
    from srcal.rft.teacher import augment

    server = FaultyServer()
    server.script("teacher", chat_ok("The scene shows shapes.\nAnswer: 2"))
    endpoint = FaultProxy(server.url.removesuffix("/v1"))
    for kind, every in (("status", 3), ("reset_upload", 4), ("truncate", 5), ("reset_download", 6), ("slow", 7)):
        endpoint.add(kind, method="POST", every=every, times=2, delay=1.5)
    recipe = load_recipe("tiny", ["teacher.kind=openai", f"teacher.url={endpoint.url}/v1", "teacher.model=teacher",
                                  "teacher.timeout_s=1", "teacher.retries=3", "teacher.concurrency=4"])
    import random

    rng = random.Random(0)
    data_dir = tmp_path / "data"
    (data_dir / "images").mkdir(parents=True)
    samples = [shapes.make_sample(recipe.data.shapes, "perception", rng, f"t{i:03d}") for i in range(12)]
    for s in samples:  # the endpoint only carries the bytes; a stub does not look at them
        s["image"] = f"images/{s['id']}.png"
        (data_dir / s["image"]).write_bytes(b"\x89PNG\r\n\x1a\n stub")
    try:
        kept, dropped, counts = augment(recipe, samples, data_dir, tmp_path / "teacher.jsonl")
    finally:
        endpoint.close()
        server.close()
    assert {e[0] for e in endpoint.events} == {"status", "reset_upload", "truncate", "reset_download", "slow"}
    assert counts["teacher_calls_ok"] == 12
    assert not [d for d in dropped if d["reason"].startswith("teacher_failed")], dropped
    cached = [json.loads(line) for line in (tmp_path / "teacher.jsonl").read_text().splitlines()]
    assert sorted(c["id"] for c in cached) == sorted(s["id"] for s in samples)


def test_judge_endpoint_faults_keep_every_verdict(tmp_path):
    """The served R-Scorer (``RemoteJudge``, /v1/completions with ``logprob_token_ids``) behind a proxy that
    answers 500/503, resets and truncates: all 20 verdicts come back, none is a Failure, each equal to the
    clean answer (A 0.9 / B 0.1 / C 0.0 renormalised: exp(-0.105) ≈ 0.900, exp(-2.303) ≈ 0.100)."""
    import math

    from test_client import FaultyServer

    from srcal.scorer.judge import JUDGE_META, RemoteJudge

    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / JUDGE_META).write_text(json.dumps({"label_token_ids": {"A": 32, "B": 33, "C": 34}}))
    server = FaultyServer()
    answer = {"choices": [{"text": "A", "logprobs": {"tokens": ["A"], "token_logprobs": [math.log(0.9)],
                                                     "top_logprobs": [{"A": math.log(0.9), "B": math.log(0.1)}]}}]}
    server.script("judge", answer)
    endpoint = FaultProxy(server.url.removesuffix("/v1"))
    endpoint.add("status", status=500, method="POST", every=3, times=2)
    endpoint.add("status", status=503, method="POST", every=4, times=2)
    endpoint.add("reset_upload", method="POST", every=5, times=2)
    endpoint.add("truncate", method="POST", every=6, times=2)
    try:
        judge = RemoteJudge(f"{endpoint.url}/v1", tmp_path / "judge", model="judge", timeout_s=2, retries=3)
        out = judge.read([[f"prompt {i} A", f"prompt {i} B"] for i in range(10)])
        judge.close()
    finally:
        endpoint.close()
        server.close()
    assert {e[0] for e in endpoint.events} == {"status", "reset_upload", "truncate"}, endpoint.events
    flat = [v for g in out for v in g]
    assert len(flat) == 20 and all(v == pytest.approx([0.9, 0.1, 0.0]) for v in flat), flat
