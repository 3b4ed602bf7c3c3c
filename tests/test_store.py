"""srcal.run.store against the local filesystem and a real S3 API (moto server, see conftest.s3_bucket)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from srcal.run import store


def _fill(d: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def _read_all(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != store.MARKER}


A = {"rft.jsonl": b'{"id": "a"}\n', "images/x.png": b"\x89PNG fake", "summary.json": b"{}"}
B = {"rft.jsonl": b'{"id": "b"}\n', "other.txt": b"new file"}


# ------------------------------------------------------------------------------------------- hashing


def test_hash_dir_depends_on_paths_and_bytes_not_location_or_marker(tmp_path):
    h1 = store.hash_dir(_fill(tmp_path / "one", A))
    h2 = store.hash_dir(_fill(tmp_path / "two", A))
    assert h1 == h2
    (tmp_path / "two" / store.MARKER).write_text("{}")
    assert store.hash_dir(tmp_path / "two") == h1, "the marker is not content"
    (tmp_path / "two" / "rft.jsonl").write_bytes(b'{"id": "c"}\n')
    assert store.hash_dir(tmp_path / "two") != h1
    _fill(tmp_path / "three", {("images/y.png" if k == "images/x.png" else k): v for k, v in A.items()})
    assert store.hash_dir(tmp_path / "three") != h1, "a renamed file changes the hash"


def test_join_and_split():
    assert store.join("s3://b/run/", "data", "rft.jsonl") == "s3://b/run/data/rft.jsonl"
    assert store.split_s3("s3://b/run/data/") == ("b", "run/data")
    assert store.split_s3("s3://b") == ("b", "")
    assert store.join("/tmp/x", "data") == "/tmp/x/data"
    assert store.is_s3("s3://b/x") and not store.is_s3("/tmp/x")


# --------------------------------------------------------------------------------------------- local


def test_local_round_trip_publishes_from_scratch(tmp_path):
    uri = str(tmp_path / "run" / "data")
    scratch = store.scratch_dir(uri)
    assert scratch == Path(uri + ".partial") and scratch.is_dir()
    assert store.scratch_dir(uri) == scratch, "stable per output URI"
    _fill(scratch, A)
    assert not store.is_complete(uri)
    with pytest.raises(store.StoreError, match="not a finished artifact"):
        store.read_marker(uri)
    marker = store.publish(scratch, uri, {"resume_key": "k1", "stage": "data"})
    assert store.is_complete(uri) and not scratch.exists()
    m = store.read_marker(uri)
    assert m == marker and m["resume_key"] == "k1" and m["stage"] == "data" and m["created"]
    assert m["hash"] == store.artifact_hash(uri) == store.hash_dir(uri)
    assert set(m["files"]) == set(A)
    assert store.materialize(uri) == Path(uri)
    assert _read_all(Path(uri)) == A


def test_local_replace_is_all_or_nothing(tmp_path, monkeypatch):
    uri = str(tmp_path / "data")
    store.publish(_fill(store.scratch_dir(uri), A), uri, {"resume_key": "a", "stage": "data"})
    # A publish that dies at the moment of swapping in the new directory leaves the old artifact, whole.
    real_rename = os.rename
    calls = []

    def failing_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # 1st: old -> trash, 2nd: new -> place
            raise OSError("disk full (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="simulated"):
        store.publish(_fill(store.scratch_dir(uri), B), uri, {"resume_key": "b", "stage": "data"})
    monkeypatch.setattr(os, "rename", real_rename)
    assert store.is_complete(uri) and store.read_marker(uri)["resume_key"] == "a"
    assert _read_all(Path(uri)) == A
    # A successful replace swaps the whole directory: no file of the old artifact survives.
    store.publish(store.scratch_dir(uri), uri, {"resume_key": "b", "stage": "data"})
    assert _read_all(Path(uri)) == B and store.read_marker(uri)["resume_key"] == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no trash or staging left behind"


def test_local_publish_from_another_directory_copies(tmp_path):
    src = _fill(tmp_path / "elsewhere" / "work", A)
    uri = str(tmp_path / "out" / "data")
    store.publish(src, uri, {"resume_key": "k", "stage": "s"})
    assert _read_all(Path(uri)) == A and src.is_dir(), "a directory that is not the scratch dir is kept"


def test_json_and_text_helpers_local(tmp_path):
    store.write_json(str(tmp_path), "sub/m.json", {"b": 1, "a": [1, 2]})
    assert store.read_json(str(tmp_path), "sub/m.json") == {"a": [1, 2], "b": 1}
    store.write_text(str(tmp_path), "t.txt", "héllo")
    assert store.read_text(str(tmp_path), "t.txt") == "héllo"


# ------------------------------------------------------------------------------------------------ S3


@pytest.fixture
def s3_uri(s3_bucket):
    return f"{s3_bucket}/t-{uuid.uuid4().hex[:8]}/data"


def test_s3_round_trip(s3_uri, tmp_path):
    scratch = store.scratch_dir(s3_uri)
    assert str(scratch).startswith(os.environ["SRCAL_CACHE_DIR"])
    _fill(scratch, A)
    expected = store.hash_dir(scratch)
    assert not store.is_complete(s3_uri)
    store.publish(scratch, s3_uri, {"resume_key": "k1", "stage": "data"})
    assert not scratch.exists(), "scratch removed after upload"
    assert store.is_complete(s3_uri) and store.artifact_hash(s3_uri) == expected
    assert store.read_json(s3_uri, "summary.json") == {}
    local = store.materialize(s3_uri)
    assert local.name == expected and _read_all(local) == A
    assert store.hash_dir(local) == expected


def test_s3_multipart_above_threshold(s3_uri, monkeypatch, tmp_path):
    """11 MiB with a 5 MiB threshold and part size → a 3-part upload (ETag "<md5>-3"), verified on read."""
    monkeypatch.setenv("SRCAL_S3_MULTIPART_THRESHOLD", str(5 << 20))
    monkeypatch.setenv("SRCAL_S3_MULTIPART_CHUNKSIZE", str(5 << 20))
    big = os.urandom(11 << 20)
    src = _fill(tmp_path / "big", {"weights.bin": big, "small.txt": b"x"})
    store.publish(src, s3_uri, {"resume_key": "k", "stage": "s"})
    bucket, prefix = store.split_s3(s3_uri)
    head = store.s3_client().head_object(Bucket=bucket, Key=f"{prefix}/weights.bin")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == len(big)
    small = store.s3_client().head_object(Bucket=bucket, Key=f"{prefix}/small.txt")
    assert "-" not in small["ETag"].strip('"'), "below the threshold: a single PUT"
    assert (store.materialize(s3_uri) / "weights.bin").read_bytes() == big


def test_s3_crashed_publish_is_never_complete(s3_uri, monkeypatch, tmp_path):
    store.publish(_fill(tmp_path / "a", A), s3_uri, {"resume_key": "a", "stage": "data"})
    client = store.s3_client()
    real_upload = store._upload_one
    uploads = []

    def dying_upload(*args, **kw):
        uploads.append(args)
        if len(uploads) == 2:
            raise ConnectionError("killed mid-publish (simulated)")
        return real_upload(*args, **kw)

    monkeypatch.setattr(store, "_upload_one", dying_upload)
    with pytest.raises(ConnectionError):
        store.publish(_fill(tmp_path / "b", B), s3_uri, {"resume_key": "b", "stage": "data"})
    # One new file is up, the old marker was withdrawn first: the reader sees "not complete".
    assert not store.is_complete(s3_uri)
    with pytest.raises(store.StoreError, match="not a finished artifact"):
        store.materialize(s3_uri)
    monkeypatch.setattr(store, "_upload_one", real_upload)
    store.publish(tmp_path / "b", s3_uri, {"resume_key": "b", "stage": "data"})
    bucket, prefix = store.split_s3(s3_uri)
    keys = sorted(o["Key"][len(prefix) + 1:] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"])
    assert keys == sorted([*B, store.MARKER]), "files of the replaced artifact are deleted"


def test_s3_materialize_cache_reused_and_verified(s3_uri, monkeypatch, tmp_path):
    store.publish(_fill(tmp_path / "a", A), s3_uri, {"resume_key": "a", "stage": "data"})
    first = store.materialize(s3_uri)
    client = store.s3_client()

    def no_download(*a, **k):
        raise AssertionError("cache hit must not download")

    monkeypatch.setattr(store, "_download_one", no_download)
    assert store.materialize(s3_uri) == first
    monkeypatch.undo()
    # Someone overwrites a file behind the marker's back: a fresh download refuses it.
    monkeypatch.setenv("SRCAL_CACHE_DIR", str(tmp_path / "fresh-cache"))
    bucket, prefix = store.split_s3(s3_uri)
    client.put_object(Bucket=bucket, Key=f"{prefix}/rft.jsonl", Body=b"tampered\n")
    with pytest.raises(store.StoreError, match="do not match the completion marker"):
        store.materialize(s3_uri)
    assert not any((tmp_path / "fresh-cache" / "artifacts").iterdir()), "no partial cache entry"


def test_s3_republish_same_content_only_rewrites_marker(s3_uri, tmp_path, monkeypatch):
    store.publish(_fill(tmp_path / "a", A), s3_uri, {"resume_key": "a", "stage": "data"})
    monkeypatch.setattr(store, "_upload_one", lambda *a, **k: (_ for _ in ()).throw(AssertionError("upload")))
    store.publish(tmp_path / "a", s3_uri, {"resume_key": "a2", "stage": "data"})
    assert store.read_marker(s3_uri)["resume_key"] == "a2"


def test_s3_retries_with_backoff_on_server_errors(s3_uri):
    """Two 503 answers in a row are retried by botocore (standard mode), and the call succeeds."""
    from botocore.awsrequest import AWSResponse

    client = store.s3_client()
    cfg = client.meta.config
    assert cfg.retries["mode"] == "standard" and cfg.retries["total_max_attempts"] >= 3
    assert cfg.s3["addressing_style"] == "path", "an explicit endpoint uses path-style addressing"

    class _Raw:
        def stream(self, **kw):
            yield b"<Error><Code>SlowDown</Code><Message>simulated</Message></Error>"

    attempts = []

    def flaky(request, **kw):
        attempts.append(request.url)
        if len(attempts) <= 2:
            return AWSResponse(request.url, 503, {}, _Raw())
        return None  # send for real

    client.meta.events.register_first("before-send.s3.PutObject", flaky)
    try:
        store.write_json(s3_uri, "m.json", {"ok": 1})
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", flaky)
    assert len(attempts) == 3
    assert store.read_json(s3_uri, "m.json") == {"ok": 1}


def test_foreign_locations_are_refused_before_any_work(tmp_path, s3_bucket):
    home = tmp_path / "home"
    _fill(home, {"thesis.tex": b"years of work"})
    with pytest.raises(store.StoreError, match="not an srcal artifact"):
        store.scratch_dir(str(home))
    with pytest.raises(store.StoreError, match="not an srcal artifact"):
        store.publish(_fill(tmp_path / "a", A), str(home), {"resume_key": "a", "stage": "s"})
    assert _read_all(home) == {"thesis.tex": b"years of work"}
    (tmp_path / "empty").mkdir()
    store.publish(_fill(tmp_path / "b", A), str(tmp_path / "empty"), {"resume_key": "a", "stage": "s"})
    assert store.is_complete(str(tmp_path / "empty"))

    bucket, _ = store.split_s3(s3_bucket)
    store.s3_client().put_object(Bucket=bucket, Key="datalake/table.parquet", Body=b"precious")
    with pytest.raises(store.StoreError, match="datalake/table.parquet"):
        store.scratch_dir(f"{s3_bucket}/datalake")
    with pytest.raises(store.StoreError):
        store.publish(tmp_path / "a", f"{s3_bucket}/datalake", {"resume_key": "a", "stage": "s"})
    assert store.read_bytes(f"{s3_bucket}/datalake", "table.parquet") == b"precious"


def test_client_config_reads_read_timeout_and_pool_size_from_env(monkeypatch):
    """SRCAL_S3_READ_TIMEOUT bounds a stalled read (then retried); the connection pool matches the transfer
    threads, so parallel uploads do not discard and reopen connections."""
    monkeypatch.setenv("SRCAL_S3_READ_TIMEOUT", "7")
    monkeypatch.setenv("SRCAL_S3_MAX_CONCURRENCY", "32")
    cfg = store.client_config()
    assert cfg.read_timeout == 7 and cfg.max_pool_connections == 32
    monkeypatch.setenv("SRCAL_S3_READ_TIMEOUT", "soon")
    with pytest.raises(store.StoreError, match="SRCAL_S3_READ_TIMEOUT='soon': expected an integer number of seconds"):
        store.client_config()


def test_debug_logging_prints_no_credentials(s3_uri, monkeypatch, caplog):
    """With the root logger at DEBUG (``srcal -v``), S3 calls log no access key id and no session token:
    botocore's wire dumps (request headers, the signed canonical request) stay off."""
    import logging

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASRCALDEBUGLEAK01")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "srcal-debug-leak-session-token")
    with caplog.at_level(logging.DEBUG):
        store.write_json(s3_uri, "m.json", {"ok": 1})
        assert store.read_json(s3_uri, "m.json") == {"ok": 1}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "AKIASRCALDEBUGLEAK01" not in text and "srcal-debug-leak-session-token" not in text
