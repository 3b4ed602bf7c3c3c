"""srcal.rft: the base stage, RAP augmentation (oracle, dataset, endpoint failure paths, cache), and
LoRA RFT with TRL on tiny LLaVA and tiny Qwen2-VL, including resume after an interruption."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 threads spin-wait badly when the 2 cores are shared

# Small enough for seconds on 2 CPU cores; head_dim stays 64 (text_hidden / text_heads).
TINY = [
    "model.tiny.vision_hidden=32", "model.tiny.text_hidden=64", "model.tiny.text_heads=1",
    "model.tiny.vocab_size=400", "model.tiny.corpus_samples=150",
    "data.rft_size=16", "data.calib_size=4", "data.eval_size=8", "data.base_train_size=16",
    "base_train.steps=3", "base_train.batch_size=4", "base_train.lr=1e-3",
    "rft.batch_size=4", "rft.epochs=1", "rft.lr=5e-3", "rft.save_steps=2", "rft.logging_steps=1",
    "rft.lora.r=4", "rft.lora.alpha=8", "eval.batch_size=8", "eval.max_new_tokens=12",
    "rft.caption_share=0",  # RAP rows only, so the step counts below are rows / batch (caption rows: own test)
]


def _recipe(tmp_path: Path, *extra: str):
    from srcal.config import load_recipe

    return load_recipe("tiny", [*TINY, f"teacher.cache_dir={tmp_path / 'teacher-cache'}", *extra])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from srcal.data.build import run_data_build

    root = tmp_path_factory.mktemp("data")
    run_data_build(_recipe(root), {}, root)
    return root


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory, data_dir):
    """A (barely) trained tiny base of each family, via the real ``base`` stage."""
    from srcal.rft.base import run_base

    dirs = {}
    for fam in ("llava", "qwen2_vl"):
        out = tmp_path_factory.mktemp(f"base-{fam}")
        summary = run_base(_recipe(out, f"model.family={fam}"), {"data": data_dir}, out)
        assert summary["trained"] and summary["counts"]["steps"] == 3
        dirs[fam] = out
    return dirs


# ---------------------------------------------------------------------------------------------- base


def test_encode_example_labels_only_the_completion(base_dirs, data_dir):
    from srcal.models.loading import load_processor, plain_question_messages
    from srcal.rft.base import IGNORE_INDEX, encode_example
    from srcal.rft.inputs import load_image

    proc = load_processor(base_dirs["llava"])
    row = json.loads((data_dir / "rft.jsonl").read_text().splitlines()[0])
    ex = encode_example(proc, plain_question_messages(row["question"]), "red.\nAnswer: red",
                        load_image(data_dir, row["image"]))
    kept = ex["labels"][ex["labels"] != IGNORE_INDEX]
    assert proc.tokenizer.decode(kept) == "red.\nAnswer: red<|im_end|>\n"
    assert (ex["labels"][: len(ex["labels"]) - len(kept)] == IGNORE_INDEX).all()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_batched_encoding_equals_one_by_one(family, base_dirs, data_dir):
    """Chunked processor calls cut back per example must give exactly the unbatched tensors."""
    from srcal.models.loading import load_processor, plain_question_messages
    from srcal.rft.base import encode_examples
    from srcal.rft.inputs import load_image

    proc = load_processor(base_dirs[family])
    rows = _rows(data_dir, 5)
    items = [(plain_question_messages(r["question"]), f"x{'y ' * i}\nAnswer: {r['answer']}",
              load_image(data_dir, r["image"])) for i, r in enumerate(rows)]
    batched = encode_examples(proc, items, chunk=3)
    single = [encode_examples(proc, [it], chunk=1)[0] for it in items]
    for b, s in zip(batched, single):
        assert b.keys() == s.keys()
        for k in b:
            assert torch.equal(b[k], s[k]), (family, k)


def test_base_stage_trains_tiny_and_points_at_real_models(base_dirs, data_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from srcal.rft.base import build_tiny_from_recipe, run_base

    log = [json.loads(x) for x in (base_dirs["llava"] / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(x["loss"] == x["loss"] and x["loss"] < 50 for x in log)  # finite
    trained = AutoModelForImageTextToText.from_pretrained(base_dirs["llava"])
    fresh = AutoModelForImageTextToText.from_pretrained(build_tiny_from_recipe(_recipe(tmp_path), tmp_path / "f"))
    changed = [n for (n, a), (_, b) in zip(trained.named_parameters(), fresh.named_parameters())
               if not torch.equal(a, b)]
    assert len(changed) > 0.9 * len(list(trained.parameters()))  # a full fine-tune touches (almost) all
    real = run_base(_recipe(tmp_path, "model.base=llava-hf/llava-1.5-7b-hf"), {"data": data_dir}, tmp_path / "r")
    assert real["trained"] is False
    assert json.loads((tmp_path / "r" / "srcal_model.json").read_text())["base"] == "llava-hf/llava-1.5-7b-hf"


def test_text_rows_start_at_bos_and_every_word_is_a_target(base_dirs, data_dir, tmp_path):
    """``base_train.text_rows``: text-only language-modelling rows, BOS first so that a text's first word
    (no leading space: "The", not " The") is predicted too, every token a label; a base trained with them
    differs from one trained without (same seed, same image rows)."""
    from safetensors.torch import load_file

    from srcal.models.loading import load_processor
    from srcal.rft.base import encode_texts, run_base

    tok = load_processor(base_dirs["llava"]).tokenizer
    [ex] = encode_texts(tok, ["The red circle is in the top left."])
    ids = ex["input_ids"].tolist()
    assert ids[0] == tok.bos_token_id and tok.convert_ids_to_tokens(ids[1]) == "The"
    assert torch.equal(ex["labels"], ex["input_ids"]) and ex["attention_mask"].all()
    summary = run_base(_recipe(tmp_path, "base_train.text_rows=2", "base_train.cache=false"), {"data": data_dir},
                       tmp_path / "with-text")
    assert summary["counts"]["text_rows"] > 100  # the tokenizer corpus's texts
    a = load_file(tmp_path / "with-text" / "model.safetensors")
    b = load_file(base_dirs["llava"] / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ teacher


def _rows(data_dir: Path, n: int | None = None) -> list[dict]:
    rows = [json.loads(x) for x in (data_dir / "rft.jsonl").read_text().splitlines()]
    return rows[:n] if n else rows


def test_teacher_cache_is_keyed_by_the_hallucination_phrasing(tmp_path, monkeypatch):
    """A cache filled under another stock phrasing of the hallucinating teacher must not be served."""
    from srcal.rft.teacher import teacher_cache_path
    from srcal.world import teacher as world_teacher

    recipe = _recipe(tmp_path, "teacher.hallucination_rate=0.8")
    before = teacher_cache_path(recipe, tmp_path)
    monkeypatch.setattr(world_teacher, "HALLUCINATION_TEMPLATE", {"obj": 2, "bar": 3})
    assert teacher_cache_path(recipe, tmp_path) != before
    perfect = _recipe(tmp_path, "teacher.hallucination_rate=0")
    assert teacher_cache_path(perfect, tmp_path) == teacher_cache_path(perfect, tmp_path)


def test_oracle_augmentation_filters_and_caches(data_dir, tmp_path):
    from srcal.rft.teacher import augment, teacher_cache_path

    recipe = _recipe(tmp_path)
    rows = _rows(data_dir)
    rows[0] = {k: v for k, v in rows[0].items() if k != "scene"}  # the oracle cannot explain a real row
    cache = teacher_cache_path(recipe, tmp_path)
    kept, dropped, counts = augment(recipe, rows, data_dir, cache)
    assert len(kept) == len(rows) - 1 and counts["dropped:teacher_failed:no_scene"] == 1
    assert dropped[0]["id"] == rows[0]["id"] and dropped[0]["reason"] == "teacher_failed:no_scene"
    assert all(r["rap"].splitlines()[-1].startswith("Answer: ") for r in kept)
    kept2, _, counts2 = augment(recipe, rows, data_dir, cache)
    assert counts2["cache_hits"] == len(rows) - 1 and [r["rap"] for r in kept2] == [r["rap"] for r in kept]


def test_dataset_rationales_become_raps(data_dir, tmp_path):
    from srcal.rft.teacher import augment

    recipe = _recipe(tmp_path, "teacher.kind=dataset")
    rows = _rows(data_dir, 3)
    rows[0] = {**rows[0], "rationale": "The picture shows it clearly. It is obvious"}
    kept, _dropped, counts = augment(recipe, rows, data_dir, tmp_path / "c.jsonl")
    assert len(kept) == 1 and counts["dropped:no_rationale"] == 2
    assert kept[0]["rap"] == f"The picture shows it clearly. It is obvious\nAnswer: {rows[0]['answer']}"


class _Teacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible teacher that misbehaves on purpose, per question (see ``plan``)."""

    plan: dict[str, list[str]] = {}  # noqa: RUF012
    calls: dict[str, int] = {}  # noqa: RUF012
    lock = threading.Lock()

    def log_message(self, *a):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"][-1]["text"]
        qid = text.split("Q=")[1].split()[0]
        with self.lock:
            i = self.calls.get(qid, 0)
            self.calls[qid] = i + 1
        steps = self.plan[qid]
        action = steps[min(i, len(steps) - 1)]
        if action == "slow":
            time.sleep(1.0)
            action = "ok"
        if action.startswith("http"):
            self.send_response(int(action[4:]))
            self.end_headers()
            return
        if action == "garbage":
            payload = b"<html>not json"
        else:
            content = {"ok": f"The image shows it. So the answer is {qid}.\nAnswer: {qid}",
                       "wrong": "The image shows it.\nAnswer: nothing",
                       "noanswer": "I think it is fine."}[action]
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first (the "slow" case)
            pass


def test_endpoint_teacher_failure_paths_and_cache(data_dir, tmp_path):
    """Per sample: ok; 503 then ok (retried); timeout forever; garbage forever; unparseable forever; a wrong
    answer (answer-match filter). A second run pays only for the failures, never for cached successes."""
    from srcal.rft.teacher import augment

    plan = {"alpha": ["ok"], "bravo": ["http503", "ok"], "charlie": ["slow"], "delta": ["garbage"], "echo": ["noanswer"],
            "foxtrot": ["wrong"], "golf": ["http500", "http502", "ok"]}
    _Teacher.plan, _Teacher.calls = plan, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        recipe = _recipe(tmp_path, "teacher.kind=openai", f"teacher.url={url}", "teacher.model=big-vlm",
                         "teacher.timeout_s=0.3", "teacher.retries=2", "teacher.concurrency=4",
                         "teacher.prompt='Q={question} explain then Answer:'")
        img = _rows(data_dir, 1)[0]["image"]
        rows = [{"id": k, "question": k, "answer": k, "image": img, "category": "perception", "source": "x"}
                for k in plan]
        kept, dropped, _counts = augment(recipe, rows, data_dir, tmp_path / "cache.jsonl")
        assert sorted(r["id"] for r in kept) == ["alpha", "bravo", "golf"]
        reasons = {d["id"]: d["reason"] for d in dropped}
        assert reasons == {"charlie": "teacher_failed:timeout", "delta": "teacher_failed:bad_json",
                           "echo": "teacher_failed:unparseable", "foxtrot": "answer_mismatch"}
        assert _Teacher.calls["bravo"] == 2 and _Teacher.calls["golf"] == 3 and _Teacher.calls["charlie"] == 3
        before = dict(_Teacher.calls)
        kept2, _, counts2 = augment(recipe, rows, data_dir, tmp_path / "cache.jsonl")
        assert sorted(r["id"] for r in kept2) == ["alpha", "bravo", "golf"] and counts2["cache_hits"] == 4  # a b f g
        for k in ("alpha", "bravo", "foxtrot", "golf"):
            assert _Teacher.calls[k] == before[k], k
        assert _Teacher.calls["delta"] > before["delta"]  # transient failures are asked again
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------------------------- RFT


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_rft_trains_lora_on_language_model_only(family, base_dirs, data_dir, tmp_path):
    from srcal.models.loading import load_lvlm, load_policy, read_meta
    from srcal.rft.sft import run_rft

    out = tmp_path / "rft"
    summary = run_rft(_recipe(tmp_path, f"model.family={family}"), {"base": base_dirs[family], "data": data_dir}, out)
    assert summary["counts"]["raps_kept"] == 16 and summary["train"]["steps"] == 4
    assert summary["train"]["final_loss"] == summary["train"]["final_loss"]  # finite, not NaN
    assert read_meta(out) == {"family": family, "stack": [], "name": "rft"}
    assert not (out / "checkpoints").exists()
    weights = _adapter(out)
    assert weights and all("language_model" in k for k in weights)
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)  # B moved off zero
    base, _ = load_lvlm(base_dirs[family])
    pol, _ = load_policy(base_dirs[family], out)
    diff = {n for (n, a), (_, b) in zip(base.named_parameters(), pol.named_parameters()) if not torch.equal(a, b)}
    assert diff and all("language_model" in n for n in diff)
    raps = [json.loads(x) for x in (out / "raps.jsonl").read_text().splitlines()]
    assert len(raps) == 16 and all("Answer:" in r["rap"] for r in raps)


def test_rft_quarantines_bad_images(base_dirs, data_dir, tmp_path):
    import shutil

    from srcal.rft.sft import run_rft

    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    first = json.loads((d / "rft.jsonl").read_text().splitlines()[0])
    (d / first["image"]).write_bytes(b"not a png")
    summary = run_rft(_recipe(tmp_path, "data.max_rejected_share=0.2", "rft.save_steps=0"),
                      {"base": base_dirs["llava"], "data": d}, tmp_path / "rft")
    assert summary["counts"]["rejected_rows"] == 1 and summary["counts"]["trained_rows"] == 15
    rejected = [json.loads(x) for x in (tmp_path / "rft" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["id"] == first["id"] and rejected[0]["field"] == "image"


def test_caption_prompts_vary_only_when_asked():
    """No extra prompts: every row gets the main one. Two extra: 300 draws from 3 prompts use each one
    (P(a prompt never drawn) = 3 * (2/3)^300, about 1e-52), the same seed repeats the list and
    another seed changes it."""
    from srcal.rft.base import caption_prompts

    assert caption_prompts("Describe the image.", [], 4, seed=0) == ["Describe the image."] * 4
    extra = ["Describe.", "What do you see?"]
    picks = caption_prompts("Describe the image.", extra, 300, seed=0)
    assert len(picks) == 300 and set(picks) == {"Describe the image.", *extra}
    assert picks == caption_prompts("Describe the image.", extra, 300, seed=0)
    assert picks != caption_prompts("Describe the image.", extra, 300, seed=1)


def test_caption_rows_share_form_and_cycle(data_dir):
    """share 0.25 of all rows beside 6 RAP rows: round(6 * 0.25 / 0.75) = 2 captions; share 0.5 beside
    3 RAP rows with only 2 scene samples: 3 captions, the pool cycled (the third repeats the first);
    a sample without a scene never becomes a caption; share 0 adds none."""
    from srcal.world.shapes import describe_scene
    from srcal.rft.sft import caption_rows

    rows = _rows(data_dir)[:3]
    rows[2] = {k: v for k, v in rows[2].items() if k != "scene"}
    two = caption_rows(rows, data_dir, 6, 0.25, "Describe the image.", seed=0)
    assert len(two) == 2
    by_image = {str(data_dir / r["image"]): r for r in rows[:2]}
    assert {c["images"][0] for c in two} == set(by_image)
    for c in two:
        assert c["prompt"][0]["content"][1]["text"] == "Describe the image."
        assert c["completion"][0]["content"][0]["text"] == describe_scene(by_image[c["images"][0]]["scene"])
    three = caption_rows(rows, data_dir, 3, 0.5, "Describe the image.", seed=0)
    assert len(three) == 3 and three[2] == three[0] and three[0] != three[1]
    assert caption_rows(rows, data_dir, 6, 0.0, "Describe the image.", seed=0) == []


def test_rft_mixes_caption_rows(base_dirs, data_dir, tmp_path):
    """16 RAP rows and rft.caption_share 0.2: round(16 * 0.2 / 0.8) = 4 caption rows, 20 trained; at batch
    4 and one epoch that is 5 optimizer steps instead of 4."""
    from srcal.rft.sft import run_rft

    summary = run_rft(_recipe(tmp_path, "rft.caption_share=0.2", "rft.save_steps=0"),
                      {"base": base_dirs["llava"], "data": data_dir}, tmp_path / "rft")
    assert summary["counts"]["caption_rows"] == 4 and summary["counts"]["trained_rows"] == 20
    assert summary["train"]["steps"] == 5


def test_torchrun_workers_train_the_rows_one_process_trains(base_dirs, data_dir, tmp_path, monkeypatch):
    """With rft.world_size 2 the workers once rebuilt their rows from raps.jsonl and so trained without the
    caption rows (16 RAP rows instead of 16 + 4). The launcher here calls the worker function in-process
    the way ``srcal.run.distributed`` does (recipe through its dict); the real torchrun launch is
    ``test_rft_two_processes_on_cpu`` (slow)."""
    from srcal.config import recipe_from_dict
    from srcal.rft import sft
    from srcal.run import distributed

    trained: list[list[dict]] = []
    monkeypatch.setattr(sft, "train_sft", lambda recipe, base, rows, out, **kw: trained.append(rows) or {})

    def in_process_torchrun(train, recipe, inputs, out, world_size, *, stage):
        assert train == "srcal.rft.sft:train_job"
        return sft.train_job(recipe_from_dict(recipe.to_dict()), inputs, out)

    monkeypatch.setattr(distributed, "launch_torchrun", in_process_torchrun)
    inputs = {"base": base_dirs["llava"], "data": data_dir}
    for world_size in (1, 2):
        sft.run_rft(_recipe(tmp_path, "rft.caption_share=0.2", f"rft.world_size={world_size}"), inputs,
                    tmp_path / f"rft-{world_size}")
    one, two = trained
    assert len(one) == 20 and two == one
    assert not (tmp_path / "rft-2" / sft.TRAIN_ROWS).exists()


def test_rft_resumes_after_interruption(base_dirs, data_dir, tmp_path):
    """Kill after step 3 (checkpoint at step 2); the re-run resumes from step 2 and ends where an
    uninterrupted run ends (same adapter weights)."""
    from transformers import TrainerCallback

    from srcal.rft import sft
    from srcal.run.distributed import last_checkpoint

    recipe = _recipe(tmp_path)
    inputs = {"base": base_dirs["llava"], "data": data_dir}
    ref = tmp_path / "ref"
    sft.run_rft(recipe, inputs, ref)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated kill")

    real_train = sft.train_sft
    out = tmp_path / "interrupted"
    try:
        sft.train_sft = lambda *a, **kw: real_train(*a, **kw, callbacks=[Kill()])
        with pytest.raises(KeyboardInterrupt):
            sft.run_rft(recipe, inputs, out)
    finally:
        sft.train_sft = real_train
    assert last_checkpoint(out / "checkpoints").name == "checkpoint-2"
    assert not (out / "adapter_model.safetensors").exists()
    summary = sft.run_rft(recipe, inputs, out)
    assert summary["train"]["resumed_from_step"] == 2 and summary["train"]["steps"] == 4
    a, b = _adapter(ref), _adapter(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("deepspeed", ["", "configs/deepspeed/zero2.json"])
def test_rft_two_processes_on_cpu(deepspeed, base_dirs, data_dir, tmp_path):
    """The multi-GPU path, smoke-tested with 2 CPU processes (torchrun + gloo; DeepSpeed's CPU accelerator).
    The first ZeRO run JIT-compiles DeepSpeed's shm op (~2.5 min)."""
    from srcal.models.loading import read_meta
    from srcal.rft.sft import run_rft

    repo = Path(__file__).resolve().parents[1]
    extra = ["rft.world_size=2", "rft.save_steps=0"]
    if deepspeed:
        extra.append(f"rft.deepspeed={repo / deepspeed}")
    out = tmp_path / "rft"
    summary = run_rft(_recipe(tmp_path, *extra), {"base": base_dirs["llava"], "data": data_dir}, out)
    assert summary["train"]["steps"] == 2  # 16 rows / (batch 4 × 2 processes)
    assert read_meta(out)["stack"] == [] and _adapter(out)
    assert not (out / "_dist_job.json").exists()
