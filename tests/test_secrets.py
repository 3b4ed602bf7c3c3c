"""Secrets stay secret: AWS credentials and endpoint tokens set to known, distinctive values must appear in no
log, artifact, report, cache file or compiled pipeline YAML after a real run.

The run is a one-round ``srcal -v run`` (debug logging: the most a user can turn on) to the moto S3 server
with an OpenAI-compatible labeller on loopback that receives the bearer token, then ``srcal pipeline
compile`` (slow-marked; the default suite runs the same check over two stages and the compile). Every byte they left behind is searched: stdout/stderr, every object under the run's S3 prefix,
every file in the srcal cache (scratch, Prefect's database and logs, downloads), and the YAML. Each value is
searched as it is and base64-encoded (what an ``Authorization: Basic`` header or a Kubernetes secret
would hold).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_client import FaultyServer, chat_logprobs

from srcal.run import store

SRCAL = Path(sys.executable).parent / "srcal"
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIASRCALLEAKCHECK7Q",
    "AWS_SECRET_ACCESS_KEY": "srcal-leak-check-aws-secret-9fQ2vX7kLm3Zt8Rw",
    "AWS_SESSION_TOKEN": "srcal-leak-check-aws-session-Hq4Np6YcWd1",
    "SRCAL_API_KEY": "sk-srcal-leak-check-endpoint-Tb5Jw2Vu8Rx",
    "KF_PIPELINES_TOKEN": "srcal-leak-check-kfp-token-Mz3Qe7Ld",
}
RUN = [
    "rounds=1",
    "model.tiny.vision_hidden=32", "model.tiny.text_hidden=64", "model.tiny.text_heads=1",
    "model.tiny.vocab_size=400", "model.tiny.corpus_samples=150",
    "data.rft_size=16", "data.calib_size=8", "data.eval_size=8", "data.base_train_size=16",
    "base_train.steps=2", "base_train.batch_size=4",
    "rft.batch_size=8", "rft.epochs=1", "rft.lora.r=4", "rft.lora.alpha=8",
    "eval.batch_size=8", "eval.max_new_tokens=8",
    "rscorer.n_train_pairs=12", "rscorer.n_heldout_pairs=6", "rscorer.steps=2", "rscorer.batch_size=4",
    "search.beams=2", "search.expansions=2", "search.max_sentences=2", "search.max_sentence_tokens=8",
    "search.n_candidates=2", "search.batch_size=8",
    "curate.min_pairs=1", "curate.min_margin=0", "curate.min_confidence=0", "curate.require_correct=false",
    "curate.chosen_pool=all", "align.batch_size=8", "align.epochs=1", "align.lora.r=4", "align.lora.alpha=8",
]


def _needles() -> dict[bytes, str]:
    out = {}
    for name, value in SECRETS.items():
        out[value.encode()] = name
        out[base64.b64encode(value.encode())] = f"{name} (base64)"
    return out


def _leaks(blob: bytes, where: str) -> list[str]:
    return [f"{what} in {where}" for needle, what in _needles().items() if needle in blob]


def _srcal(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([str(SRCAL), "-v", *argv], env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _check_no_leak(out: str, cache: Path, outputs: list[subprocess.CompletedProcess], yaml_path: Path,
                   server: FaultyServer, min_objects: int) -> None:
    """The secrets were in use, and are in none of: the commands' output, the S3 objects, the cache, the YAML."""
    auth = [h.get("Authorization") for h in server.headers]
    assert auth and set(auth) == {f"Bearer {SECRETS['SRCAL_API_KEY']}"}, set(auth)  # the labeller got the token
    leaks = [leak for i, done in enumerate(outputs) for leak in _leaks(done.stdout + done.stderr, f"output {i}")]
    leaks += _leaks(yaml_path.read_bytes(), str(yaml_path))
    bucket, prefix = store.split_s3(out)
    keys = store._s3_list(bucket, prefix)
    assert len(keys) >= min_objects, keys
    for key in keys:
        leaks += _leaks(store.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read(), f"s3://{bucket}/{key}")
    for p in (p for p in cache.rglob("*") if p.is_file()):
        leaks += _leaks(p.read_bytes(), str(p))
    assert not leaks, leaks


def _setup(s3_bucket: str, tmp_path: Path):
    server = FaultyServer()
    server.script("labeller", chat_logprobs("A", -0.3, {"A": -0.3, "B": -1.5, "C": -3.0}))
    # The run's only AWS credentials are these: the s3_bucket fixture points the shared credentials and
    # config files at empty temporary paths.
    env = {**os.environ, **SECRETS, "SRCAL_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    labeller = ["labeller.kind=openai", f"labeller.url={server.url}", "labeller.model=labeller"]
    return server, env, labeller, f"{s3_bucket}/secrets-{uuid.uuid4().hex[:8]}"


def test_no_secret_in_stage_logs_artifacts_or_yaml(s3_bucket, tmp_path):
    """Quick form: ``srcal -v stage data`` to S3, ``srcal -v stage rscorer-data`` reading it from S3 and calling
    the labeller with the token, ``srcal -v pipeline compile``."""
    server, env, labeller, out = _setup(s3_bucket, tmp_path)
    small = ["data.rft_size=8", "data.calib_size=4", "data.eval_size=4", "data.base_train_size=8",
             "rscorer.n_train_pairs=8", "rscorer.n_heldout_pairs=4"]
    try:
        outputs = [_srcal(["stage", "data", "--output", f"{out}/data", *_sets(small)], env),
                   _srcal(["stage", "rscorer-data", "--input", f"data={out}/data", "--output",
                           f"{out}/rscorer-data", *_sets([*small, *labeller])], env)]
    finally:
        server.close()
    yaml_path = tmp_path / "pipeline.yaml"
    outputs.append(_srcal(["pipeline", "compile", "--output", str(yaml_path), "--rounds", "1"], env))
    assert store.is_complete(f"{out}/rscorer-data")
    _check_no_leak(out, tmp_path / "cache", outputs, yaml_path, server, min_objects=20)


@pytest.mark.slow
def test_no_secret_in_a_whole_run_logs_artifacts_reports_or_yaml(s3_bucket, tmp_path):
    """Whole form: a one-round ``srcal -v run`` to S3 (every stage, the report included), then compile."""
    server, env, labeller, out = _setup(s3_bucket, tmp_path)
    try:
        outputs = [_srcal(["run", "--out", out, *_sets([*RUN, *labeller])], env)]
    finally:
        server.close()
    yaml_path = tmp_path / "pipeline.yaml"
    outputs.append(_srcal(["pipeline", "compile", "--output", str(yaml_path), "--rounds", "1"], env))
    assert store.is_complete(f"{out}/report")
    assert any("prefect" in p.parts for p in (tmp_path / "cache").rglob("*")), "Prefect's home is searched"
    _check_no_leak(out, tmp_path / "cache", outputs, yaml_path, server, min_objects=30)
