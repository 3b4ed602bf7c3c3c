"""srcal.bench: the `srcal bench <what>` plumbing (its JSON contract) and the search benchmark's
random-weight architecture route, run at toy size on the CPU (the same code the GPU run uses)."""

from __future__ import annotations

import json

import pytest

from srcal import bench
from srcal.config import load_recipe


def test_run_adds_name_and_machine_and_writes_json(tmp_path, monkeypatch):
    def fake(recipe, **options):
        return {"baseline": {"seconds": 4.0}, "ours": {"seconds": 1.0}, "speedup": 4.0, "options": options}

    monkeypatch.setattr(bench, "resolve", lambda what: fake)
    out = tmp_path / "sub" / "b.json"
    res = bench.run("search", load_recipe("tiny"), json_path=str(out), samples="3", arch=None)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(res, default=str))
    assert on_disk["name"] == "search" and on_disk["recipe"] == "tiny" and on_disk["speedup"] == 4.0
    assert on_disk["machine"]["cpus"] >= 1 and "platform" in on_disk["machine"]
    assert on_disk["options"] == {"samples": "3"}  # unset CLI flags are not passed on


def test_run_refuses_results_without_the_contract_keys(monkeypatch):
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench.resolve("nope")
    monkeypatch.setattr(bench, "resolve", lambda what: lambda recipe, **o: {"ours": {}})
    with pytest.raises(RuntimeError, match="baseline"):
        bench.run("search", load_recipe("tiny"))


def test_search_arch_route_at_toy_size_through_the_cli(tmp_path):
    """``--arch llava-test --random-weights``: the real-size code path (config-built LLaVA, word-level
    tokenizer without delimiters, so every sentence is exactly max_sentence_tokens long)."""
    pytest.importorskip("torch")
    from srcal.cli import main

    out = tmp_path / "arch.json"
    rc = main(["bench", "search", "--arch", "llava-test", "--random-weights", "--set", "search.max_sentence_tokens=5",
               "--option", "samples=2", "--option", "max_sentences=2", "--option", "baseline_samples=1",
               "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    ours, base = res["ours"], res["baseline"]
    assert ours["samples"] == 2 and base["samples"] == 1
    assert ours["generate_calls"] == 2  # one per sentence step
    assert base["generate_calls"] == 1 + 2  # step 0: one beam; step 1: two beams (B=5 > K=2 children)
    # no delimiters: every expansion is cut at exactly 5 tokens
    assert ours["generated_tokens"] == 5 * ours["expansions"]
    assert res["speedup"] > 0 and res["params"]["prompt_tokens"] == 1 + 16 + 12
    with pytest.raises(ValueError, match="random-weights"):
        bench.run("search", load_recipe("tiny"), arch="llava-test")
