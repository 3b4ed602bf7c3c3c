"""A stand-in stage function for the KFP wiring test (see sitecustomize.py next to it).

It records which inputs it was given (``inputs.json``) and writes the files the next stages and the
real ``report`` stage read, so the test can check every hand-off by content.
"""

import json
import os
from pathlib import Path


def standin_stage(recipe, inputs, out, **options):
    if "pairs" in inputs and options.get("round") == os.environ.get("SRCAL_STANDIN_FAIL_ALIGN"):
        raise RuntimeError(f"stand-in: align {options['round']} fails (SRCAL_STANDIN_FAIL_ALIGN)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in inputs.items():  # every input must arrive as a finished artifact directory
        assert (Path(path) / "_SRCAL_COMPLETE.json").is_file(), (name, path)
    (out / "inputs.json").write_text(json.dumps({k: str(v) for k, v in sorted(inputs.items())}))
    (out / "options.json").write_text(json.dumps(options, sort_keys=True))
    if "model" in inputs:  # eval
        preds = [{"id": f"e{i}", "correct": i % 2 == 0, "factuality": 0.5, "consistent": True, "rap_format": True}
                 for i in range(4)]
        (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        entry = {"name": options["round"], "n": 4, "accuracy": 0.5, "rationale_factuality": 0.5,
                 "consistency": 1.0, "rap_format": 1.0}
        (out / "metrics.json").write_text(json.dumps({"recipe": recipe.name, "rounds": [entry]}))
    if "rscorer_data" in inputs:  # rscorer-train
        (out / "heldout_metrics.json").write_text(json.dumps({"heldout_agreement": 0.8, "heldout_pairs": 10}))
    if "judgments" in inputs:  # curate
        (out / "pairs.jsonl").write_text(json.dumps({"id": "c0", "chosen": "a", "rejected": "b"}) + "\n")
    if "judge" in inputs and "candidates" in inputs:  # score: record how the judge was served
        (out / "judge.json").write_text(json.dumps({"serve": recipe.rscorer.serve, "url": recipe.rscorer.url}))
    return {"counts": {"out": 1}, "standin": True}


def standin_score(recipe, inputs, out, **options):
    """A stand-in R-Scorer for runs whose other stages are real: every ordered pair of a sample's
    candidates, judged by answer correctness (curate's own rule), in the judgments.jsonl row format."""
    from srcal import curate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    calib = Path(inputs["data"]) / "calib.jsonl"
    for line in calib.read_text().splitlines():
        row = json.loads(line)
        truth[str(row["id"])] = row
    rows = []
    for sid, row in curate.load_candidates(Path(inputs["candidates"]) / "candidates.jsonl").items():
        cands = row.get("candidates") or []
        sample = {**truth.get(sid, {}), **{k: v for k, v in row.items() if k != "candidates"}}
        ok = [bool(curate._is_correct(sample, c, recipe.rap_answer_prefix)) for c in cands]
        for a in range(len(cands)):
            for b in range(len(cands)):
                if a != b:
                    pa = 0.5 if ok[a] == ok[b] else (0.85 if ok[a] else 0.1)
                    rows.append({"id": sid, "a": a, "b": b, "p_A": pa, "p_B": round(0.95 - pa, 4), "p_C": 0.05})
    (out / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"counts": {"judgments": len(rows)}, "standin": True}
