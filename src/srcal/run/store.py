"""Artifact store: one interface for local directories and ``s3://bucket/prefix``.

An *artifact* is a directory of files (a stage's output) plus a completion marker,
``_SRCAL_COMPLETE.json``, which is always the last thing to appear. The marker records::

    {"resume_key": str, "stage": str, "hash": sha256 of the content (see hash_dir),
     "files": {relative path: {"size": int, "sha256": str}}, "created": ISO-8601 UTC}

Guarantees (what a reader may rely on)
--------------------------------------
* **No half-written artifact is ever complete.** :func:`is_complete` is true only once the marker
  exists, and the marker is written after every file.
  - Local: the stage writes into a scratch directory (``<uri>.partial/``); :func:`publish` writes the
    marker *inside* it and then renames the whole directory into place, so the artifact appears
    complete in one ``rename``. Replacing an existing artifact is two renames (old → trash, new →
    place): between them the artifact is briefly absent (not complete), never mixed; if the second
    rename fails the old one is put back. A crash before the renames leaves the old artifact untouched.
  - S3 has no rename: every file is uploaded first (multipart above a threshold), the marker object
    last. When an artifact already exists at the URI, its marker is deleted *before* the first upload,
    so during a replacement (and after a publish that crashed midway) readers see "not complete" and
    never a mix of old and new files under an old marker. A stage that fails never calls publish, so a
    failing run never touches what is already published.
* **Content hash for resume.** The marker's ``hash`` is computed from the file bytes; it keys the
  resume hash of downstream stages (``srcal.stages``) and the download cache.
* **Verified reads.** :func:`materialize` of an S3 artifact downloads into a cache directory named by
  the content hash, checks every file's size and sha256 against the marker, and only then makes the
  cache entry visible (rename); later calls reuse it without network traffic.
* **Retries with backoff.** Every S3 call goes through botocore's ``standard`` retry mode
  (exponential backoff with jitter on throttling, 5xx and connection errors), ``SRCAL_S3_MAX_ATTEMPTS``
  attempts (default 8). botocore retries a request only until the response *head* arrives; a body that
  breaks off afterwards (connection reset mid-download, fewer bytes than ``Content-Length``, a response
  checksum mismatch) surfaces as a streaming error, so every object read here (:func:`_read_retrying`)
  retries the whole GET with backoff as well. A file that still does not match the marker's sha256 after
  download is fetched once more before :func:`materialize` gives up (tests/test_faults.py injects each
  of these through a proxy in front of the moto server).

S3 settings come from the standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``/``AWS_REGION``, profiles); with an explicit endpoint
(MinIO, Ceph, moto) path-style addressing is used. Transfer tuning: ``SRCAL_S3_MULTIPART_THRESHOLD`` and
``SRCAL_S3_MULTIPART_CHUNKSIZE`` (bytes, default 64 MiB / 16 MiB), ``SRCAL_S3_MAX_CONCURRENCY``
(default 16), ``SRCAL_S3_READ_TIMEOUT`` (seconds without a byte before a read is abandoned and retried,
default 120). The local cache lives in ``SRCAL_CACHE_DIR`` (default ``~/.cache/srcal``).

A location that holds anything else (a non-empty directory without a marker, an S3 prefix with
foreign objects) is refused by :func:`check_target` before a stage runs, so a mistyped ``--out`` never
deletes data. Artifacts must not nest (a stage output is never inside another artifact's directory): replacing an
artifact replaces its whole directory.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("srcal.run.store")

MARKER = "_SRCAL_COMPLETE.json"
# Written first and removed last by an S3 publish: lets a later publish tell the debris of a crashed
# publish (safe to replace) from someone else's objects under the same prefix (never touched).
CLAIM = "_SRCAL_PUBLISHING.json"
_HASH_CHUNK = 1 << 20


class StoreError(RuntimeError):
    """An artifact that cannot be read or written; the message names the URI and what to do."""


# ---------------------------------------------------------------------------------------------- URIs


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def _local(uri: str | os.PathLike) -> Path:
    s = str(uri)
    return Path(s.removeprefix("file://"))


def join(uri: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or an ``s3://`` URI (always ``/`` inside S3 keys)."""
    if is_s3(uri):
        out = str(uri).rstrip("/")
        for p in parts:
            out += "/" + str(p).strip("/")
        return out
    return str(_local(uri).joinpath(*parts))


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → (``bucket``, ``a/b``), without trailing slash."""
    rest = str(uri)[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StoreError(f"{uri!r}: not an S3 URI of the form s3://bucket/prefix")
    return bucket, key.strip("/")


def _key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


# --------------------------------------------------------------------------------------------- hashing


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"size", "sha256"}}`` for every file under ``path`` except the marker."""
    root = Path(path)
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if rel == MARKER:
                continue
            out[rel] = {"size": p.stat().st_size, "sha256": _sha256_file(p)}
    return dict(sorted(out.items()))


def _hash_digests(digests: dict[str, dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(rel.encode() + b"\0" + digests[rel]["sha256"].encode() + b"\n")
    return h.hexdigest()


def hash_dir(path: str | os.PathLike) -> str:
    """sha256 over the sorted relative paths and the bytes of every file, ignoring the marker.

    Equal content gives an equal hash wherever the directory lives, so an S3 artifact and its local
    download hash the same.
    """
    return _hash_digests(file_digests(path))


# ------------------------------------------------------------------------------------------ S3 client


def _env_int(name: str, default: int, unit: str = "bytes") -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError as e:
        raise StoreError(f"environment variable {name}={raw!r}: expected an integer number of {unit}") from e


def client_config():
    """botocore Config: standard retries with backoff, path style when an endpoint is set, timeouts."""
    from botocore.config import Config

    s3 = {"addressing_style": "path"} if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get(
        "AWS_ENDPOINT_URL_S3") else {}
    return Config(
        retries={"total_max_attempts": _env_int("SRCAL_S3_MAX_ATTEMPTS", 8), "mode": "standard"},
        # One pooled connection per transfer thread (botocore's default is 10): with fewer, urllib3 discards
        # and reopens connections under load ("Connection pool is full" warnings).
        max_pool_connections=max(10, _env_int("SRCAL_S3_MAX_CONCURRENCY", 16, "threads")),
        s3=s3,
        connect_timeout=10,
        read_timeout=_env_int("SRCAL_S3_READ_TIMEOUT", 120, "seconds"),
    )


def transfer_config():
    """s3transfer settings: multipart above the threshold, parallel parts (read from env each call)."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=_env_int("SRCAL_S3_MULTIPART_THRESHOLD", 64 << 20),
        multipart_chunksize=_env_int("SRCAL_S3_MULTIPART_CHUNKSIZE", 16 << 20),
        max_concurrency=_env_int("SRCAL_S3_MAX_CONCURRENCY", 16),
        use_threads=True,
    )


def quiet_wire_logs() -> None:
    """Cap botocore's logging at INFO unless someone set its level on purpose.

    botocore's DEBUG records are wire dumps: every request's headers, including the access key id and the
    session token (``X-Amz-Security-Token``), and the canonical request that is signed. ``srcal -v`` puts the
    root logger at DEBUG, which alone would print them to the terminal, a CI log or a pod log
    (tests/test_secrets.py runs with ``-v``). Someone who wants the wire dump sets
    ``logging.getLogger("botocore").setLevel(logging.DEBUG)`` themselves.
    """
    for name in ("botocore", "s3transfer"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.INFO)


_CLIENTS: dict[tuple, Any] = {}


def s3_client():
    """A boto3 S3 client for the current AWS environment (cached per environment and process).

    The cache key includes the endpoint, region and key id so tests (and tools) that change the
    environment get a matching client.
    """
    try:
        import boto3
    except ImportError as e:  # pragma: no cover - depends on the install
        raise StoreError("s3:// URIs need boto3: pip install 'srcal[s3]'") from e
    quiet_wire_logs()
    env = os.environ
    key = (os.getpid(), env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
           env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"), env.get("AWS_ACCESS_KEY_ID"),
           env.get("AWS_PROFILE"), env.get("SRCAL_S3_MAX_ATTEMPTS"), env.get("SRCAL_S3_READ_TIMEOUT"),
           env.get("SRCAL_S3_MAX_CONCURRENCY"))
    if key not in _CLIENTS:
        endpoint = key[1] or None
        region = key[2] or ("us-east-1" if endpoint else None)
        session = boto3.session.Session()
        _CLIENTS[key] = session.client("s3", endpoint_url=endpoint, region_name=region, config=client_config())
    return _CLIENTS[key]


def _s3_exists(bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise StoreError(f"s3://{bucket}/{key}: {e}") from e


def _streaming_errors() -> tuple[type[BaseException], ...]:
    """Errors raised while a response body is read, after botocore's own retries are over."""
    from botocore import exceptions as be

    return (be.ResponseStreamingError, be.IncompleteReadError, be.FlexibleChecksumError, be.ReadTimeoutError,
            be.ConnectionClosedError, be.EndpointConnectionError, ConnectionError, TimeoutError)


def _read_retrying(what: str, fn):
    """``fn()`` (one GET including its body), retried on streaming errors with exponential backoff.

    ``SRCAL_S3_MAX_ATTEMPTS`` tries in all; waits 0.1 s, 0.2 s, … (capped at 5 s) with equal jitter. The
    last error is raised as it is (the caller's message names the object).
    """
    import random

    attempts = max(1, _env_int("SRCAL_S3_MAX_ATTEMPTS", 8, "attempts"))
    errors = _streaming_errors()
    for i in range(attempts):
        try:
            return fn()
        except errors as e:
            if i == attempts - 1:
                raise
            step = min(5.0, 0.1 * 2**i)
            log.warning("reading %s broke off (%s: %s); retry %d/%d", what, type(e).__name__,
                        str(e)[:160], i + 1, attempts - 1)
            time.sleep(step / 2 + random.uniform(0, step / 2))
    raise AssertionError("unreachable")


def _s3_get(bucket: str, key: str) -> bytes:
    from botocore.exceptions import ClientError

    try:
        return _read_retrying(f"s3://{bucket}/{key}",
                              lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(f"s3://{bucket}/{key} does not exist") from e
        raise StoreError(f"s3://{bucket}/{key}: {e}") from e


# ------------------------------------------------------------------------------------- small file I/O


def read_bytes(uri: str, rel: str) -> bytes:
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        return _s3_get(bucket, _key(prefix, rel))
    return (_local(uri) / rel).read_bytes()


def write_bytes(uri: str, rel: str, data: bytes) -> None:
    """Write one file (atomically: temp file + rename locally, one PUT on S3)."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        s3_client().put_object(Bucket=bucket, Key=_key(prefix, rel), Body=data)
        return
    path = _local(uri) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_text(uri: str, rel: str) -> str:
    return read_bytes(uri, rel).decode("utf-8")


def write_text(uri: str, rel: str, text: str) -> None:
    write_bytes(uri, rel, text.encode("utf-8"))


def read_json(uri: str, rel: str) -> Any:
    return json.loads(read_text(uri, rel))


def write_json(uri: str, rel: str, obj: Any) -> None:
    write_text(uri, rel, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# ------------------------------------------------------------------------------------------ artifacts


def is_complete(uri: str) -> bool:
    """True when the artifact's completion marker exists (so every file is in place)."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        return _s3_exists(bucket, _key(prefix, MARKER))
    return (_local(uri) / MARKER).is_file()


def read_marker(uri: str) -> dict:
    """The marker of a complete artifact; raises :class:`StoreError` if the artifact is not complete."""
    try:
        return json.loads(read_text(uri, MARKER))
    except FileNotFoundError as e:
        raise StoreError(
            f"{uri}: not a finished artifact (no {MARKER}); run the stage that produces it first"
        ) from e


def artifact_hash(uri: str) -> str:
    """The content hash recorded when the artifact was published."""
    return read_marker(uri)["hash"]


def cache_root() -> Path:
    return Path(os.environ.get("SRCAL_CACHE_DIR") or Path.home() / ".cache" / "srcal")


def check_target(uri: str) -> None:
    """Refuse an output location that holds something other than an srcal artifact.

    Publishing replaces everything at ``uri``; pointing ``--out`` at a home directory or a bucket prefix
    with other data must fail before any work, not delete that data. Allowed: nothing there yet, an
    empty directory, a complete artifact, or (S3) the debris of a crashed publish (its claim object).
    """
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        if _s3_exists(bucket, _key(prefix, MARKER)) or _s3_exists(bucket, _key(prefix, CLAIM)):
            return
        found = s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
        if found.get("KeyCount", 0):
            raise StoreError(f"{uri}: holds objects that are not an srcal artifact (e.g. "
                             f"{found['Contents'][0]['Key']}); refusing to replace them: choose another prefix")
        return
    p = _local(uri)
    if p.exists() and (not p.is_dir() or (not (p / MARKER).is_file() and any(p.iterdir()))):
        raise StoreError(f"{uri}: exists and is not an srcal artifact; refusing to replace it: choose another "
                         "output path, or remove it yourself")


def scratch_dir(uri: str) -> Path:
    """A working directory that is the same for every run writing ``uri``, created if missing.

    Being stable is the point: a stage killed mid-way (e.g. training) finds its checkpoints here when
    it is re-run. Local: the sibling ``<uri>.partial/`` (same filesystem, so publish is a rename);
    S3: ``$SRCAL_CACHE_DIR/scratch/<sha256(uri)[:16]>``. Calls :func:`check_target` first, so a stage
    aimed at a foreign location fails before it runs.
    """
    check_target(uri)
    if is_s3(uri):
        d = cache_root() / "scratch" / hashlib.sha256(str(uri).rstrip("/").encode()).hexdigest()[:16]
    else:
        p = _local(uri)
        d = p.with_name(p.name + ".partial")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _make_marker(local_dir: Path, marker: dict) -> dict:
    digests = file_digests(local_dir)
    return {
        **marker,
        "hash": _hash_digests(digests),
        "files": digests,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def publish(local_dir: str | os.PathLike, uri: str, marker: dict) -> dict:
    """Make ``local_dir`` the complete artifact at ``uri``; returns the marker written.

    ``marker`` carries ``resume_key`` and ``stage``; ``hash``, ``files`` and ``created`` are added here.
    If ``local_dir`` is the scratch directory of ``uri`` it is gone afterwards (renamed into place
    locally; deleted after upload on S3).
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StoreError(f"publish {uri}: {local_dir} is not a directory")
    full = _make_marker(local_dir, marker)
    check_target(uri)
    if is_s3(uri):
        _publish_s3(local_dir, uri, full)
        if local_dir.resolve() == scratch_dir(uri).resolve():
            shutil.rmtree(local_dir, ignore_errors=True)
    else:
        _publish_local(local_dir, _local(uri), full)
    log.info("published %s (%d files, hash %s)", uri, len(full["files"]), full["hash"][:12])
    return full


def _publish_local(local_dir: Path, dest: Path, marker: dict) -> None:
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = local_dir.absolute()
    # The final step must be a rename on one filesystem; anything else is first copied next to dest.
    if src.parent != dest.parent:
        staging = dest.parent / f".{dest.name}.publish-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(src, staging)
    else:
        staging = src
    (staging / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    if dest.exists():
        trash = dest.parent / f".{dest.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(dest, trash)
        try:
            os.rename(staging, dest)
        except BaseException:
            os.rename(trash, dest)  # put the previous artifact back: never leave a partial one
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, dest)


def _publish_s3(local_dir: Path, uri: str, marker: dict) -> None:
    bucket, prefix = split_s3(uri)
    client = s3_client()
    old = read_marker(uri) if is_complete(uri) else None
    if old is not None and old.get("hash") == marker["hash"]:
        # Same content already there: only the marker (new resume key) changes.
        client.put_object(Bucket=bucket, Key=_key(prefix, MARKER), Body=_marker_bytes(marker))
        return
    client.put_object(Bucket=bucket, Key=_key(prefix, CLAIM), Body=_marker_bytes(
        {"stage": marker.get("stage"), "resume_key": marker.get("resume_key"), "started": marker["created"]}))
    if old is not None:
        # Withdraw the old artifact first: from here on readers see "not complete", never a mix.
        client.delete_object(Bucket=bucket, Key=_key(prefix, MARKER))
    cfg = transfer_config()
    _parallel(lambda rel: _upload_one(client, cfg, local_dir / rel, bucket, _key(prefix, rel),
                                      marker["files"][rel]["size"]), list(marker["files"]))
    # Like the local directory swap, the new artifact replaces everything under its prefix: files of an
    # older artifact (or of a publish that crashed midway, whose marker is gone) must not linger.
    keep = {*marker["files"], CLAIM}
    stale = [k for k in _s3_list(bucket, prefix) if k[len(prefix) + 1 if prefix else 0:] not in keep]
    for i in range(0, len(stale), 1000):
        client.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in stale[i:i + 1000]], "Quiet": True})
    client.put_object(Bucket=bucket, Key=_key(prefix, MARKER), Body=_marker_bytes(marker))
    client.delete_object(Bucket=bucket, Key=_key(prefix, CLAIM))


def _parallel(fn, items: list) -> None:
    """Run ``fn`` over ``items`` on ``SRCAL_S3_MAX_CONCURRENCY`` threads; the first error is raised.

    Artifacts are often thousands of small files (images): one request at a time would spend most of
    the wall time on round trips. boto3 clients are thread-safe.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(len(items), _env_int("SRCAL_S3_MAX_CONCURRENCY", 16))) as ex:
        for _ in ex.map(fn, items):
            pass


def _upload_one(client, cfg, path: Path, bucket: str, key: str, size: int) -> None:
    """One PUT below the multipart threshold, a multipart upload (parallel parts) above it."""
    if size >= cfg.multipart_threshold:
        client.upload_file(str(path), bucket, key, Config=cfg)
    else:
        with open(path, "rb") as f:
            client.put_object(Bucket=bucket, Key=key, Body=f)


def _download_one(client, cfg, bucket: str, key: str, dest: Path, size: int) -> None:
    """One object to ``dest``: ranged parallel GETs above the multipart threshold, else one GET; both retried
    when the body breaks off (s3transfer retries its ranges itself; :func:`_read_retrying` the whole file)."""
    if size >= cfg.multipart_threshold:
        _read_retrying(f"s3://{bucket}/{key}", lambda: client.download_file(bucket, key, str(dest), Config=cfg))
    else:
        dest.write_bytes(_read_retrying(f"s3://{bucket}/{key}",
                                        lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read()))


def _s3_list(bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix/`` (not ``prefix2/``)."""
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _marker_bytes(marker: dict) -> bytes:
    return (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode()


def fetch_objects(uri: str, suffix: str = "") -> list[Path]:
    """Download plain S3 objects (not an artifact: e.g. a dataset release) under ``uri`` ending in ``suffix``.

    ``uri`` may name one object or a prefix. Files land in ``$SRCAL_CACHE_DIR/objects/<bucket>/<key>`` and
    are re-downloaded only when the object's ETag or size changed. Returns the local paths, sorted by key.
    """
    bucket, key = split_s3(uri)
    client, cfg = s3_client(), transfer_config()
    keys = [key] if key and _s3_exists(bucket, key) else _s3_list(bucket, key)
    out = []
    for k in sorted(k for k in keys if k.endswith(suffix)):
        head = client.head_object(Bucket=bucket, Key=k)
        stamp = f"{head['ETag']}:{head['ContentLength']}"
        dest = cache_root() / "objects" / bucket / k
        stamp_file = dest.with_name(dest.name + ".etag")
        if not (dest.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp):
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            client.download_file(bucket, k, str(tmp), Config=cfg)
            os.replace(tmp, dest)
            stamp_file.write_text(stamp)
        out.append(dest)
    return out


def materialize(uri: str) -> Path:
    """A local directory holding the complete artifact ``uri``.

    Local URIs are returned as they are. S3 artifacts are downloaded into
    ``$SRCAL_CACHE_DIR/artifacts/<content hash>/``, verified file by file against the marker, and then
    renamed into place, so a cache entry is complete or absent; an existing entry is reused.
    """
    if not is_s3(uri):
        return _local(uri)
    marker = read_marker(uri)
    dest = cache_root() / "artifacts" / marker["hash"]
    if (dest / MARKER).is_file():
        return dest
    bucket, prefix = split_s3(uri)
    client, cfg = s3_client(), transfer_config()
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in marker["files"]:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    _parallel(lambda rel: _download_one(client, cfg, bucket, _key(prefix, rel), tmp / rel,
                                        marker["files"][rel]["size"]), list(marker["files"]))
    tmp.mkdir(parents=True, exist_ok=True)  # an artifact may hold no files at all
    got = file_digests(tmp)
    bad = sorted(r for r in set(got) | set(marker["files"]) if got.get(r) != marker["files"].get(r))
    if bad and set(bad) <= set(marker["files"]):
        # Bytes damaged in transit (no response checksum caught it) read right the second time; an artifact
        # changed behind its marker reads wrong again and is refused below.
        log.warning("%s: %d file(s) do not match the completion marker after download (e.g. %s); fetching "
                    "them again", uri, len(bad), bad[:3])
        _parallel(lambda rel: _download_one(client, cfg, bucket, _key(prefix, rel), tmp / rel,
                                            marker["files"][rel]["size"]), bad)
        got = file_digests(tmp)
        bad = sorted(r for r in set(got) | set(marker["files"]) if got.get(r) != marker["files"].get(r))
    if bad:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(
            f"{uri}: downloaded files do not match the completion marker ({len(bad)} differ, e.g. {bad[:3]}); "
            "the artifact was changed after publication or is being re-published; re-run the producing stage"
        )
    (tmp / MARKER).write_bytes(_marker_bytes(marker))
    try:
        os.rename(tmp, dest)
    except OSError:
        if (dest / MARKER).is_file():  # another process won the race with the same content
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    return dest
