"""Checks of what a recipe points at, run before any stage so a bad path or a missing endpoint is one
clear error in seconds, not a failure hours into a run (issue 12, "Bad input").

:func:`check` looks only at what exists outside the recipe; the recipe's own consistency (types, ranges,
``teacher.url`` required with ``teacher.kind: openai``) is :mod:`srcal.config`'s job and has already
passed when a :class:`~srcal.config.Recipe` exists. Every problem is collected and raised at once in a
:class:`PreflightError`, one line per dotted key, like the recipe's own validation.

``where`` says who runs the recipe:

* ``"run"`` (``srcal run``): this machine runs every stage, so local paths, the S3 sources (with this
  machine's credentials) and the judge endpoint must all be usable from here.
* ``"pipeline"`` (``srcal pipeline submit|schedule``): the steps run in the cluster, where local paths
  mean nothing and the ``judge_serving`` parameter supplies the judge endpoint; only the S3 sources are
  checked, and only a prefix without parquet objects in a bucket that exists is an error. The cluster
  reads S3 with its own secret, which may reach another store than this machine's settings, so a missing
  bucket, denied access or an unreachable endpoint is logged, not raised.

S3 is checked only when credentials or an endpoint are configured in the environment (``AWS_*``
variables or an AWS config file): without them boto3 would probe the instance-metadata service, which
takes seconds to time out off-cloud. Each S3 listing has a short timeout and no retries.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from srcal.config import Recipe, RecipeError
from srcal.models import capabilities

log = logging.getLogger("srcal.preflight")

# What a model directory needs (transformers 5 writes the image processor into processor_config.json,
# released checkpoints ship preprocessor_config.json).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
S3_TIMEOUT_S = 3.0


class PreflightError(RecipeError):
    """The recipe is valid but points at things that are missing; the message lists each, by dotted key."""


def check(recipe: Recipe, *, where: Literal["run", "pipeline"] = "run") -> None:
    """Raise :class:`PreflightError` listing every problem found, or return None when there is none."""
    problems: list[str] = []
    if where == "run":
        problems += _endpoints(recipe)
        problems += _model_dir("model.base", recipe.model.base, processor=True)
        # the architecture from the checkpoint's config.json: unsupported ones stop here (issue 16)
        problems += capabilities.problems(recipe)
        problems += _model_dir("rscorer.base", recipe.rscorer.base, processor=False)
    if recipe.data.world == "real":
        problems += _sources(recipe, where)
    if problems:
        raise PreflightError(f"recipe {recipe.name!r} cannot run ({where} preflight):\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------- endpoints


def _has_vllm() -> bool:
    """A vLLM environment to serve the judge from: the separate one, or vLLM beside srcal (the vLLM image)."""
    import importlib.util

    from srcal.serve.vllm_env import find_vllm_python

    return find_vllm_python() is not None or importlib.util.find_spec("vllm") is not None


def _endpoints(recipe: Recipe) -> list[str]:
    """Each endpoint a stage of this run will call is an http(s) URL.

    ``rscorer.serve: openai`` with no ``rscorer.url`` is what the shipped real recipes say: "the judge is
    served over HTTP". In the pipeline the ``judge_serving`` parameter provides the URL (a KServe
    InferenceService or a vLLM process inside the score step); under ``srcal run`` each score step serves
    the judge this run trained with vLLM's OpenAI server (``srcal.scorer.score.judge_endpoint``), which
    needs a vLLM environment. Without this check the run would stop at its first score step, after RFT,
    search and judge training.
    """
    out = []
    wanted = []
    if recipe.teacher.kind == "openai":
        wanted.append(("teacher.url", recipe.teacher.url))
    if recipe.labeller.kind == "openai":
        wanted.append(("labeller.url", recipe.labeller.url))
    if recipe.rscorer.serve == "openai" and recipe.score.mode == "pairwise":
        if not recipe.rscorer.url and not _has_vllm():
            out.append("rscorer.url: rscorer.serve is 'openai' with no url, so `srcal run` serves the judge it "
                       "trains with vLLM, but no vLLM environment was found (SRCAL_VLLM_PYTHON, ./.venv-vllm: "
                       "bash scripts/install_vllm_cpu.sh); add --set rscorer.serve=hf to load the judge "
                       "in-process, or --set rscorer.url=http://HOST:PORT/v1 for a server of a judge trained "
                       "before (the run given with --from)")
        wanted.append(("rscorer.url", recipe.rscorer.url))
    for key, url in wanted:
        parsed = urlparse(url)
        if url and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            out.append(f"{key}: {url!r} is not an http(s) URL; expected e.g. http://host:8000/v1")
    return out


# ------------------------------------------------------------------------------------------ model dirs


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).exists()


def _model_dir(key: str, ref: str, *, processor: bool) -> list[str]:
    """A local model directory has its config, weights, tokenizer and (for the LVLM) image processor.

    Hub ids and ``s3://`` URIs are not checked here (no network on the path to the first stage); a srcal
    base artifact (``srcal_model.json`` pointing at the weights) is checked at the directory it names.
    """
    if ref == "tiny" or ref.startswith("s3://") or not _looks_local(ref):
        return []
    path = Path(ref).expanduser()
    if not path.is_dir():
        return [f"{key}: {ref} does not exist" if not path.exists() else f"{key}: {ref} is not a directory"]
    pointer = path / "srcal_model.json"
    if pointer.is_file():
        target = str(json.loads(pointer.read_text()).get("base") or "")
        if target and target != ref:
            return _model_dir(f"{key} (-> {target})", target, processor=processor)
    names = {p.name for p in path.iterdir()}
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        missing.append("weights (*.safetensors)")
    if not names & set(TOKENIZER_FILES):
        missing.append(f"a tokenizer (one of {', '.join(TOKENIZER_FILES)})")
    if processor and not names & set(PROCESSOR_FILES):
        missing.append(f"an image processor ({' or '.join(PROCESSOR_FILES)})")
    out = [f"{key}: {ref} is not a complete model directory; missing {'; '.join(missing)}"] if missing else []
    return out


# ---------------------------------------------------------------------------------------------- sources


def _sources(recipe: Recipe, where: str) -> list[str]:
    out = []
    s3_ok = _s3_configured()
    clients: dict = {}  # one S3 client for all sources: making one costs more than a listing
    for i, src in enumerate(recipe.data.sources):
        key = f"data.sources[{i}].path"
        if not src.path:
            out.append(f"{key}: empty; point it at a parquet file, a directory of them, or an s3:// prefix")
        elif src.path.startswith("s3://"):
            if s3_ok:
                out += _s3_source(key, src.path, where, clients)
            else:
                log.info("%s: %s not checked: no AWS credentials or endpoint in the environment", key, src.path)
        elif where == "run":
            out += _local_source(key, src.path)
    return out


def _local_source(key: str, path: str) -> list[str]:
    p = Path(path).expanduser()
    if p.is_file():
        return [] if p.suffix == ".parquet" else [f"{key}: {path} is not a .parquet file"]
    if not p.exists():
        return [f"{key}: {path} does not exist"]
    if next(p.rglob("*.parquet"), None) is None:
        return [f"{key}: {path} holds no .parquet files"]
    return []


def _s3_configured() -> bool:
    env = os.environ
    if any(env.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE",
                                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
        return True
    files = (env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", env.get("AWS_CONFIG_FILE") or "~/.aws/config")
    return any(Path(f).expanduser().is_file() for f in files)


def _s3_source(key: str, uri: str, where: str, clients: dict) -> list[str]:
    """The prefix (or object) holds at least one ``.parquet`` object, as ``adapters.parquet_files`` needs."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return [f"{key}: {uri} needs boto3 to read: pip install 'srcal[s3]'"] if where == "run" else []
    from srcal.run import store

    bucket, prefix = store.split_s3(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ("us-east-1" if endpoint else None)
    if "s3" not in clients:
        cfg = Config(connect_timeout=S3_TIMEOUT_S, read_timeout=S3_TIMEOUT_S, retries={"total_max_attempts": 1},
                     s3={"addressing_style": "path"} if endpoint else {})
        clients["s3"] = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=cfg)
    client = clients["s3"]
    try:
        # one page: a release keeps its parquet files together, and the check must stay quick
        resp = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        where_s3 = f" at {endpoint}" if endpoint else ""
        msg = (f"{key}: bucket {bucket!r} does not exist{where_s3}" if code == "NoSuchBucket"
               else f"{key}: cannot list {uri}{where_s3}: {code or e}")
        return [msg] if where == "run" else _logged(msg)
    except BotoCoreError as e:  # no credentials, endpoint unreachable, timeout
        msg = f"{key}: cannot list {uri}: {e}"
        return [msg] if where == "run" else _logged(msg)
    keys = [o["Key"] for o in resp.get("Contents", [])]
    under = [k for k in keys if k == prefix or not prefix or k.startswith(prefix + "/")]
    if any(k.endswith(".parquet") for k in under):
        return []
    if resp.get("IsTruncated") and under:
        log.info("%s: %s has more than 1000 objects and none of the first are .parquet; not checked further",
                 key, uri)
        return []
    what = "no objects" if not under else f"{len(under)} object(s) but no .parquet file"
    return [f"{key}: {uri} has {what}" + (f" (listed at {endpoint})" if endpoint else "")]


def _logged(msg: str) -> list[str]:
    log.warning("%s (not checked further: the cluster's credentials may differ)", msg)
    return []
