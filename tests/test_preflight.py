"""Preflight: a recipe that points at missing things stops with one error that lists them all, before any
stage runs, in well under 2 s (issue 12, "Bad input").

The model directories carry the file names ``save_pretrained`` writes for the real releases (a shrunken
llava-1.5 save holds config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
preprocessor_config.json, processor_config.json, chat_template.jinja); preflight reads names, not
weights. S3 checks run against the real moto server of the ``s3_bucket`` fixture.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from srcal import preflight
from srcal.config import load_recipe
from srcal.preflight import PreflightError

LLAVA_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "preprocessor_config.json", "processor_config.json", "chat_template.jinja")
JUDGE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def model_dir(root: Path, files=LLAVA_FILES, model_type: str = "llava") -> Path:
    root.mkdir(parents=True)
    for name in files:
        (root / name).write_text(json.dumps({"model_type": model_type}) if name == "config.json" else "{}")
    return root


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No AWS settings at all (a developer's own profile must not make these tests reach for a network)."""
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
              "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def good(tmp_path, vqa_parquet):
    """Overrides for the llava-1.5 recipe under which everything it points at exists locally."""
    srcs = []
    for i, adapter in enumerate(("aokvqa", "scienceqa", "chartqa", "ai2d", "mmstar")):
        vqa_parquet(adapter, tmp_path / "data" / adapter / "train-00000.parquet", n=2, bad=False)
        srcs.append(f"data.sources.{i}.path={tmp_path / 'data' / adapter}")
    return [*srcs, f"model.base={model_dir(tmp_path / 'llava')}",
            f"rscorer.base={model_dir(tmp_path / 'judge', JUDGE_FILES, 'qwen2')}", "rscorer.serve=hf"]


def test_a_recipe_whose_inputs_exist_passes(good, no_aws):
    t0 = time.perf_counter()
    assert preflight.check(load_recipe("llava-1.5-7b", good)) is None
    assert preflight.check(load_recipe("tiny")) is None  # shapes world, tiny models, oracles: nothing to check
    assert time.perf_counter() - t0 < 2.0


def test_every_problem_is_listed_in_one_error(tmp_path, good, no_aws, monkeypatch):
    monkeypatch.setattr(preflight, "_has_vllm", lambda: False)  # serve: openai, no url, nothing to serve with
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.csv").write_text("a,b\n")
    bad = [
        "data.sources.0.path=" + str(tmp_path / "no-such-dir"),
        "data.sources.1.path=" + str(tmp_path / "empty"),
        "data.sources.2.path=" + str(tmp_path / "notes.csv"),
        "model.base=" + str(model_dir(tmp_path / "no-proc", [f for f in LLAVA_FILES if "processor" not in f])),
        "rscorer.base=" + str(model_dir(tmp_path / "no-tok", ("config.json", "model.safetensors"), "qwen2")),
        "rscorer.serve=openai", "teacher.url=teacher.srcal.svc:8000/v1",
    ]
    t0 = time.perf_counter()
    with pytest.raises(PreflightError) as e:
        preflight.check(load_recipe("llava-1.5-7b", [*good, *bad]))
    assert time.perf_counter() - t0 < 2.0
    lines = str(e.value).splitlines()[1:]
    assert [ln.split(":")[0].strip() for ln in lines] == [
        "rscorer.url", "teacher.url", "model.base", "rscorer.base",
        "data.sources[0].path", "data.sources[1].path", "data.sources[2].path"]
    msg = str(e.value)
    assert "no vLLM environment was found" in msg and "--set rscorer.serve=hf" in msg
    assert "'teacher.srcal.svc:8000/v1' is not an http(s) URL" in msg
    assert "missing an image processor (preprocessor_config.json or processor_config.json)" in msg
    assert "no-tok is not a complete model directory; missing a tokenizer" in msg
    assert "no-such-dir does not exist" in msg and "empty holds no .parquet files" in msg
    assert "notes.csv is not a .parquet file" in msg


def test_model_dir_checks(tmp_path, good, no_aws):
    qwen = model_dir(tmp_path / "qwen", LLAVA_FILES, "qwen2_5_vl")
    with pytest.raises(PreflightError, match="is a 'qwen2_5_vl' model but model.family is 'llava'; set "
                                             "model.family=qwen2_5_vl"):
        preflight.check(load_recipe("llava-1.5-7b", [*good, f"model.base={qwen}"]))
    with pytest.raises(PreflightError, match=r"model.base: \./no/such/model does not exist"):
        preflight.check(load_recipe("llava-1.5-7b", [*good, "model.base=./no/such/model"]))
    # a srcal base pointer is followed to the directory it names
    pointer = tmp_path / "pointer"
    pointer.mkdir()
    (pointer / "srcal_model.json").write_text(json.dumps({"family": "llava", "base": str(tmp_path / "gone")}))
    with pytest.raises(PreflightError, match=r"model.base \(-> .*gone\): .*gone does not exist"):
        preflight.check(load_recipe("llava-1.5-7b", [*good, f"model.base={pointer}"]))
    # hub ids and s3:// URIs are left to the stages (no network before the first stage)
    hub = [*good, "model.base=llava-hf/llava-1.5-7b-hf", "rscorer.base=s3://bucket/judge-base"]
    assert preflight.check(load_recipe("llava-1.5-7b", hub)) is None


def test_judge_url_is_not_needed_when_the_run_does_not_call_it(good, no_aws, monkeypatch):
    # serve: openai with no url: `srcal run` serves the judge it trains with vLLM (scorer/score.py)
    monkeypatch.setattr(preflight, "_has_vllm", lambda: True)
    assert preflight.check(load_recipe("llava-1.5-7b", [*good, "rscorer.serve=openai"])) is None
    assert preflight.check(load_recipe("llava-1.5-7b", [*good, "rscorer.serve=openai",
                                                        "rscorer.url=http://127.0.0.1:8000/v1"])) is None
    # independent scoring reads the judge in-process whatever rscorer.serve says (scorer/score.py)
    assert preflight.check(load_recipe("llava-1.5-7b", [*good, "rscorer.serve=openai", "score.mode=independent"])) is None
    # the pipeline's judge_serving sets the url; local paths mean nothing in the cluster
    assert preflight.check(load_recipe("llava-1.5-7b", ["model.base=/nowhere"]), where="pipeline") is None


def test_s3_sources_are_listed(s3_bucket, good):
    import boto3

    bucket = s3_bucket.removeprefix("s3://")
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="preflight/chartqa/train-0.parquet", Body=b"PAR1")
    s3.put_object(Bucket=bucket, Key="preflight/readme/README.md", Body=b"#")
    s3.put_object(Bucket=bucket, Key="preflight/chartqa-old/x.parquet", Body=b"PAR1")  # a sibling, not under
    ok = [*good, f"data.sources.2.path={s3_bucket}/preflight/chartqa/",
          f"data.sources.3.path={s3_bucket}/preflight/chartqa/train-0.parquet"]
    assert preflight.check(load_recipe("llava-1.5-7b", ok)) is None
    bad = [*good, f"data.sources.0.path={s3_bucket}/preflight/none/", f"data.sources.1.path={s3_bucket}/preflight/readme",
           f"data.sources.2.path={s3_bucket}/preflight/chartqa-",
           "data.sources.3.path=s3://no-such-bucket-srcal/ai2d/"]
    t0 = time.perf_counter()
    with pytest.raises(PreflightError) as e:
        preflight.check(load_recipe("llava-1.5-7b", bad))
    assert time.perf_counter() - t0 < 2.0
    msg = str(e.value)
    assert f"data.sources[0].path: {s3_bucket}/preflight/none/ has no objects" in msg
    assert "data.sources[1].path: " in msg and "has 1 object(s) but no .parquet file" in msg
    assert f"data.sources[2].path: {s3_bucket}/preflight/chartqa- has no objects" in msg
    assert "data.sources[3].path: bucket 'no-such-bucket-srcal' does not exist" in msg
    # off-cluster (pipeline submit) only an empty prefix in a bucket that exists here is an error: the
    # cluster's own S3 secret may reach another store
    with pytest.raises(PreflightError) as e:
        preflight.check(load_recipe("llava-1.5-7b", bad), where="pipeline")
    assert [ln.split(":")[0].strip() for ln in str(e.value).splitlines()[1:]] == [
        "data.sources[0].path", "data.sources[1].path", "data.sources[2].path"]


def test_s3_is_not_checked_without_credentials_or_endpoint(no_aws):
    t0 = time.perf_counter()
    recipe = load_recipe("llava-1.5-7b", ["rscorer.serve=hf"])  # every source an s3:// prefix
    assert preflight.check(recipe, where="pipeline") is None
    assert time.perf_counter() - t0 < 2.0


def test_srcal_run_stops_before_any_stage(tmp_path, capsys, no_aws):
    """The shipped recipe as a user runs it: one error, exit 2, and no stage started (no run directory)."""
    from srcal.cli import main

    out = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["run", "--recipe", "llava-1.5-7b", "--out", str(out),
                 "--set", f"data.sources.0.path={tmp_path / 'mine' / 'a-okvqa'}"]) == 2
    assert time.perf_counter() - t0 < 2.0
    err = capsys.readouterr().err
    assert f"data.sources[0].path: {tmp_path / 'mine' / 'a-okvqa'} does not exist" in err
    assert not out.exists()


def test_pipeline_submit_stops_before_contacting_the_host(s3_bucket, capsys):
    from srcal.cli import main

    assert main(["pipeline", "submit", "--recipe", "llava-1.5-7b", "--host", "http://127.0.0.1:9",
                 "--set", f"data.sources.0.path={s3_bucket}/preflight-submit/empty/"]) == 2
    err = capsys.readouterr().err
    assert f"data.sources[0].path: {s3_bucket}/preflight-submit/empty/ has no objects" in err
    assert "rscorer.url" not in err  # the pipeline's judge_serving provides it


def test_teacher_and_labeller_urls_are_required_when_the_recipe_loads():
    """Their kinds need no run context, so :mod:`srcal.config` refuses them already (before preflight)."""
    from srcal.config import RecipeError

    with pytest.raises(RecipeError) as e:
        load_recipe("llava-1.5-7b", ["teacher.url=''", "labeller.url=''"])
    assert "teacher.url: required when teacher.kind is 'openai'" in str(e.value)
    assert "labeller.url: required when labeller.kind is 'openai'" in str(e.value)
