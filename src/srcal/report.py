"""Stage ``report``: the run's ``metrics.json`` (keys in docs/architecture.md), ``report.md`` and a self-contained ``report.html``.

Inputs are the artifacts the report reads, by name (so the same stage serves ``srcal run`` and the KFP
pipeline, which hands it the same artifacts):

* ``eval_<model>`` for base, rft, round1 … — each ``metrics.json`` with one round entry + ``predictions.jsonl``;
* ``judge`` — R-Scorer's ``heldout_metrics.json`` (agreement with held-out labels);
* ``round<k>_curate`` — ``summary.json`` (kept / dropped with reasons, pair-confidence histogram) and
  ``pairs.jsonl`` (chosen vs rejected examples); ``round<k>_search|score|align`` and any other named input
  — only their ``summary.json`` timings.

What it adds beyond collecting: the headline comparison *last round vs RFT* on the same eval items, as
paired differences with 95% bootstrap intervals (the eval items are shared, so pairing removes the
between-item variance that two independent intervals would double-count).

The judge is reported where it works: besides its held-out agreement on teacher RAPs and corruptions,
``rscorer.policy_agreement`` (held-out pairs of two policy candidates) and, on the shapes world, its
agreement with the noise-free oracle on the candidates round 1 really scored (from curate's summary).

Ablations (:func:`compare_runs`, ``srcal compare RUN…``, docs/ablations.md) put sibling run directories made
with ``srcal run --from`` side by side: each run's last round − its RFT, and − the reference's last round,
paired on the shared eval items.

Plots are drawn with matplotlib's Agg backend and embedded as base64 PNG in the HTML (so it renders as a
KFP HTML artifact with no side files); ``plots/*.png`` are also written for ``report.md``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

from srcal.run.jsonl import read_jsonl

log = logging.getLogger("srcal.report")

METRICS = ("accuracy", "rationale_factuality", "consistency", "rap_format")
PRED_KEYS = {"accuracy": "correct", "rationale_factuality": "factuality", "consistency": "consistent",
             "rap_format": "rap_format"}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


# ----------------------------------------------------------------------------------------- statistics


def paired_bootstrap_diff(a: dict[str, Any], b: dict[str, Any], *, n_boot: int = 2000, seed: int = 0
                          ) -> tuple[float | None, tuple[float, float] | None, int]:
    """Mean(b) − mean(a) over the ids both have a value for, with a 95% percentile bootstrap interval.

    ``a`` / ``b`` map item id → value (bool or float, None = not measurable for that item). Items are
    resampled with replacement as *pairs*. Returns (difference, (low, high), n paired items).
    """
    import numpy as np

    ids = sorted(k for k in a.keys() & b.keys() if a[k] is not None and b[k] is not None)
    if not ids:
        return None, None, 0
    d = np.array([float(b[k]) - float(a[k]) for k in ids])
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(d.mean()), (float(lo), float(hi)), len(ids)


def compare_rounds(pred_a: list[dict[str, Any]], pred_b: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired differences b − a for every metric from two prediction files on the same eval split."""
    out = {}
    for metric, key in PRED_KEYS.items():
        va = {r["id"]: r.get(key) for r in pred_a}
        vb = {r["id"]: r.get(key) for r in pred_b}
        diff, ci, n = paired_bootstrap_diff(va, vb)
        out[metric] = {"diff": diff, "ci95": ci, "n": n}
    return out


# ------------------------------------------------------------------------------------------- collect


def model_order(name: str) -> int:
    """base < rft < round1 < round2 < … < anything else."""
    if name == "base":
        return 0
    if name == "rft":
        return 1
    if name.startswith("round") and name[5:].isdigit():
        return 1 + int(name[5:])
    return 10**6


def collect(recipe, inputs: dict[str, Path]) -> dict[str, Any]:
    """Gather everything the report shows from the named input artifacts."""
    rounds = []
    predictions = {}
    for key, path in inputs.items():
        if not key.startswith("eval_"):
            continue
        m = _read_json(Path(path) / "metrics.json") or {}
        rounds += m.get("rounds", [])
        predictions[key[len("eval_"):]] = read_jsonl(Path(path) / "predictions.jsonl", missing_ok=True)
    rounds.sort(key=lambda e: model_order(e["name"]))
    heldout = _read_json(Path(inputs["judge"]) / "heldout_metrics.json") if "judge" in inputs else None
    heldout = heldout or {}
    curation = []
    for k in range(1, recipe.rounds + 1):
        key = f"round{k}_curate"
        if key in inputs:
            s = _read_json(Path(inputs[key]) / "summary.json") or {}
            pairs = read_jsonl(Path(inputs[key]) / "pairs.jsonl", missing_ok=True)
            align = _read_json(Path(inputs.get(f"round{k}_align", Path("/nonexistent"))) / "summary.json") or {}
            curation.append({"round": f"round{k}", "summary": s, "examples": pairs[:3], "align": align.get("train")})
    timings = {}
    for key, path in inputs.items():
        s = _read_json(Path(path) / "summary.json") or {}
        t = (s.get("timings_s") or {}).get("total")
        if t is not None:
            # a merged search (search.shards > 1): its shards' time plus the merge's (srcal.search.stage.shard_timings)
            timings[key] = round(float(t) + float((s.get("timings_s") or {}).get("shards_sum") or 0.0), 1)
    timings["total"] = round(sum(timings.values()), 1)
    return {"rounds": rounds, "predictions": predictions, "heldout": heldout, "curation": curation,
            "timings": timings}


def build_metrics(recipe, c: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json`` with the keys docs/architecture.md lists first, then the comparison and curation details."""
    rounds = [{"name": e["name"], "n": e.get("n"), **{m: e.get(m) for m in METRICS},
               **{k: v for k, v in e.items() if k not in ("name", "n", *METRICS)}} for e in c["rounds"]]
    h = c["heldout"]
    first_vs_oracle = next((x["summary"]["judge_vs_oracle"] for x in c["curation"]
                            if (x["summary"].get("judge_vs_oracle") or {}).get("readings")), None)
    metrics = {
        "recipe": recipe.name,
        "rounds": rounds,
        "rscorer": {"heldout_agreement": h.get("heldout_agreement", h.get("agreement")),
                    "heldout_pairs": h.get("heldout_pairs", h.get("n_pairs", h.get("n"))),
                    # the judge on the policy's own candidates (held-out model-vs-model pairs, clean label)
                    "policy_agreement": h.get("policy_agreement"),
                    "policy_pairs": h.get("policy_pairs"),
                    # shapes world: the judge vs the noise-free oracle on the first round's scored candidates
                    "oracle_agreement_round1": (first_vs_oracle or {}).get("agreement"),
                    "oracle_readings_round1": (first_vs_oracle or {}).get("readings"),
                    **{k: v for k, v in h.items() if k not in ("heldout_agreement", "heldout_pairs",
                                                                 "policy_agreement", "policy_pairs")}},
        "timings_s": c["timings"],
    }
    names = [e["name"] for e in c["rounds"]]
    last = next((n for n in reversed(names) if n.startswith("round")), None)
    if "rft" in c["predictions"] and last and last in c["predictions"]:
        metrics["comparison"] = {"a": "rft", "b": last,
                                 "paired_diff": compare_rounds(c["predictions"]["rft"], c["predictions"][last])}
    metrics["curation"] = [{"round": x["round"], "counts": x["summary"].get("counts"),
                            "dropped": x["summary"].get("dropped"), "aggregation": x["summary"].get("aggregation"),
                            "judge": x["summary"].get("judge", "rscorer"),
                            "mean_margin": x["summary"].get("mean_margin"), "oracle": x["summary"].get("oracle"),
                            "judge_vs_oracle": x["summary"].get("judge_vs_oracle"), "align": x["align"]}
                           for x in c["curation"]]
    return metrics


# --------------------------------------------------------------------------------------------- plots


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_metrics_by_round(rounds: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = list(range(len(rounds)))
    for m in METRICS:
        ys = [e.get(m) for e in rounds]
        pts = [(i, y, e.get(f"{m}_ci")) for i, y, e in zip(x, ys, rounds) if y is not None]
        if not pts:
            continue
        # max(0, …): an interval need not contain the point estimate after clipping to [0, 1]
        err = [[max(0.0, y - (ci[0] if ci else y)) for _, y, ci in pts],
               [max(0.0, (ci[1] if ci else y) - y) for _, y, ci in pts]]
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, marker="o", capsize=3, label=m)
    ax.set_xticks(x, [e["name"] for e in rounds])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("rate (95% CI)")
    ax.set_title("Metrics by model")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_per_category(rounds: list[dict[str, Any]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = sorted({c for e in rounds for c in (e.get("per_category") or {})})
    if not cats:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    width = 0.8 / max(1, len(rounds))
    for ax, metric in zip(axes, ("accuracy", "rationale_factuality")):
        for j, e in enumerate(rounds):
            vals = [((e.get("per_category") or {}).get(c) or {}).get(metric) for c in cats]
            ax.bar([i + j * width for i in range(len(cats))], [v or 0 for v in vals], width, label=e["name"])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cats))], cats)
        ax.set_title(metric)
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    return _png(fig)


def plot_confidence_hist(curation: list[dict[str, Any]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hists = [(x["round"], x["summary"].get("pair_confidence_hist")) for x in curation]
    hists = [(r, h) for r, h in hists if h and sum(h["counts"])]
    if not hists:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for r, h in hists:
        edges, counts = h["edges"], h["counts"]
        total = sum(counts)
        ax.step(edges[:-1], [c / total for c in counts], where="post", label=r)
    ax.set_xlabel("pair confidence |2P−1|·consistency")
    ax.set_ylabel("share of candidate pairs")
    ax.set_title("R-Scorer pair confidence")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_kept_dropped(curation: list[dict[str, Any]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curation:
        return None
    reasons = sorted({k for x in curation for k in (x["summary"].get("dropped") or {})})
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    names = [x["round"] for x in curation]
    bottom = [0] * len(curation)
    kept = [(x["summary"].get("counts") or {}).get("kept", 0) for x in curation]
    ax.bar(names, kept, label="kept", color="#2a9d8f")
    bottom = kept[:]
    for reason in reasons:
        vals = [(x["summary"].get("dropped") or {}).get(reason, 0) for x in curation]
        ax.bar(names, vals, bottom=bottom, label=f"dropped: {reason}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("calibration samples")
    ax.set_title("Curation: kept and dropped per round")
    ax.legend(fontsize=7)
    return _png(fig)


# ------------------------------------------------------------------------------------------- render


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def rounds_table(rounds: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["model", "n", *METRICS]]
    for e in rounds:
        rows.append([e["name"], _fmt(e.get("n")),
                     *[f"{_fmt(e.get(m))} {_ci(e.get(f'{m}_ci'))}".strip() for m in METRICS]])
    return rows


def comparison_table(metrics: dict[str, Any]) -> list[list[str]] | None:
    comp = metrics.get("comparison")
    if not comp:
        return None
    rows = [["metric", f"{comp['b']} − {comp['a']}", "95% CI (paired bootstrap)", "paired n"]]
    for m, v in comp["paired_diff"].items():
        rows.append([m, f"{v['diff']:+.3f}" if v["diff"] is not None else "–", _ci(v["ci95"]), str(v["n"])])
    return rows


def curation_table(curation: list[dict[str, Any]]) -> list[list[str]]:
    """One row per round; on the shapes world also the oracle's view of the pairs: mean factuality of the
    chosen vs the rejected side, and the judge's agreement with the oracle on the candidates it scored."""
    rows = [["round", "samples", "kept", "dropped (reasons)", "mean margin", "factuality chosen / rejected",
             "judge = oracle", "DPO steps", "loss first → last", "reward acc."]]
    for x in curation:
        s, a = x["summary"], x["align"] or {}
        counts = s.get("counts") or {}
        o, jo = s.get("oracle") or {}, s.get("judge_vs_oracle") or {}
        dropped = ", ".join(f"{k}: {v}" for k, v in (s.get("dropped") or {}).items()) or "–"
        fact = f"{_fmt(o.get('chosen_factuality'))} / {_fmt(o.get('rejected_factuality'))}" if o else "–"
        agree = f"{_fmt(jo.get('agreement'))} ({jo.get('readings')})" if jo else "–"
        rows.append([x["round"] + ("" if s.get("judge", "rscorer") == "rscorer" else f" ({s['judge']})"),
                     _fmt(counts.get("samples")), _fmt(counts.get("kept")), dropped,
                     _fmt(s.get("mean_margin")), fact, agree, _fmt(a.get("steps")),
                     f"{_fmt(a.get('loss_first'))} → {_fmt(a.get('loss_last'))}", _fmt(a.get("rewards_accuracy_last"))])
    return rows


def _md_table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows[1:])


def _html_table(rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def examples(curation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to two chosen-vs-rejected examples from the first and the last round."""
    picked = []
    for x in (curation[:1] + curation[-1:]) if len(curation) > 1 else curation:
        for ex in x["examples"][:2]:
            picked.append({"round": x["round"], **ex})
    return picked


def render(recipe, metrics: dict[str, Any], c: dict[str, Any], plots: dict[str, bytes]) -> tuple[str, str]:
    """(report.md, report.html) from the metrics, the collected details and the PNG plots."""
    title = f"srcal report — recipe {recipe.name}"
    rt, ct, cur = rounds_table(c["rounds"]), comparison_table(metrics), curation_table(c["curation"])
    tt = [["step", "seconds"]] + [[k, _fmt(v, 1)] for k, v in metrics["timings_s"].items()]
    rs = metrics["rscorer"]
    judge_line = (f"R-Scorer held-out agreement: {_fmt(rs.get('heldout_agreement'))} on "
                  f"{_fmt(rs.get('heldout_pairs'))} pairs; on the policy's own candidates (model vs model, "
                  f"both orders, non-tie): {_fmt(rs.get('policy_agreement'))} on {_fmt(rs.get('policy_pairs'))} "
                  f"pairs.")
    if rs.get("oracle_agreement_round1") is not None:
        judge_line += (f" Against the noise-free oracle on round 1's scored candidates: "
                       f"{_fmt(rs['oracle_agreement_round1'])} of {rs['oracle_readings_round1']} non-tie readings.")
    exs = examples(c["curation"])

    md = [f"# {title}\n", "## Models on the eval split (95% CI)\n", _md_table(rt)]
    if ct:
        md += ["\n## Last round vs RFT (same eval items, paired)\n", _md_table(ct)]
    md += [f"\n{judge_line}\n", "\n## Curation and preference training per round\n", _md_table(cur)]
    for name in plots:
        md.append(f"\n![{name}](plots/{name}.png)\n")
    if exs:
        md.append("\n## Examples: chosen vs rejected\n")
        for ex in exs:
            md.append(f"\n**{ex['round']} · {ex['id']}** — {ex.get('question')} (truth: {ex.get('answer')}; "
                      f"margin {_fmt(ex.get('margin'))}, confidence {_fmt(ex.get('confidence'))}, "
                      f"scores {ex.get('scores')})\n\n"
                      f"- chosen (#{ex.get('chosen_index')}): `{ex['chosen']!s}`\n"
                      f"- rejected (#{ex.get('rejected_index')}): `{ex['rejected']!s}`\n")
    md += ["\n## Timings per step (s, when the step ran)\n", _md_table(tt)]

    css = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ccc;"
           "padding:3px 7px;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
           "pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap;font-size:12px}")
    h = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>"),
         "<h2>Models on the eval split (95% CI)</h2>", _html_table(rt)]
    if ct:
        h += ["<h2>Last round vs RFT (same eval items, paired)</h2>", _html_table(ct)]
    h += [f"<p>{html.escape(judge_line)}</p>", "<h2>Curation and preference training per round</h2>",
          _html_table(cur)]
    for name, png in plots.items():
        h.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>"
                 f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    if exs:
        h.append("<h2>Examples: chosen vs rejected</h2>")
        for ex in exs:
            h.append(f"<h3>{html.escape(ex['round'])} · {html.escape(str(ex['id']))}</h3>"
                     f"<p>{html.escape(str(ex.get('question')))} — truth: {html.escape(str(ex.get('answer')))}; "
                     f"margin {_fmt(ex.get('margin'))}, confidence {_fmt(ex.get('confidence'))}, scores "
                     f"{html.escape(str(ex.get('scores')))}</p>"
                     f"<p>chosen (#{ex.get('chosen_index')}):</p><pre>{html.escape(ex['chosen'])}</pre>"
                     f"<p>rejected (#{ex.get('rejected_index')}):</p><pre>{html.escape(ex['rejected'])}</pre>")
    h += ["<h2>Timings per step (s, when the step ran)</h2>", _html_table(tt), "</body></html>"]
    return "".join(md), "\n".join(h)


# ------------------------------------------------------------------------------------------- ablations


def _eval_names(run: Path) -> list[str]:
    """Models evaluated in a run directory (``eval/<name>/predictions.jsonl``), base < rft < round1 < …"""
    d = Path(run) / "eval"
    names = [p.name for p in d.iterdir() if (p / "predictions.jsonl").exists()] if d.is_dir() else []
    return sorted(names, key=model_order)


def run_settings(run: Path) -> dict[str, Any]:
    """What tells ablations apart, read from the run's own artifacts (a run directory keeps no recipe copy):
    rounds evaluated, the scoring mode, who curated, the aggregation, and pairs kept per round."""
    run = Path(run)
    rounds = [n for n in _eval_names(run) if n.startswith("round")]
    cur = [_read_json(run / n / "curate" / "summary.json") or {} for n in rounds]
    score = _read_json(run / "round1" / "score" / "summary.json") or {}
    first = cur[0] if cur else {}
    return {"rounds": len(rounds), "score_mode": score.get("mode"), "judge": first.get("judge", "rscorer") if first else None,
            "aggregation": first.get("aggregation"), "pairs": [(c.get("counts") or {}).get("kept") for c in cur]}


def _model_hash(artifact: Path) -> str | None:
    """Content hash a finished artifact was published with (its completion marker), or None."""
    from srcal.run import store

    return (_read_json(artifact / store.MARKER) or {}).get("hash")


def compare_runs(runs: list[str | Path]) -> dict[str, Any]:
    """Each run's last round − its RFT model, and its last round − the first run's (the reference's) last
    round, as paired bootstrap differences on the eval items both have (:func:`compare_rounds`).

    Sibling runs made with ``srcal run --from <reference>`` share data, base and RFT, so their RFT rows are
    the same model's and the second difference is the ablation's own effect; ``same_rft`` says whether a
    run's RFT predictions are identical to the reference's (if not, read only its own last − RFT).
    """
    if not runs:
        raise ValueError("compare: name at least one run directory (the first is the reference)")
    loaded = []
    for run in map(Path, runs):
        names = _eval_names(run)
        last = next((n for n in reversed(names) if n.startswith("round")), None)
        if "rft" not in names or last is None:
            raise FileNotFoundError(f"compare: {run} has no eval/rft and eval/round<k> predictions (is it a "
                                    f"finished srcal run directory?)")
        if not (run / "metrics.json").exists():
            # `srcal run` writes it last, after every step; a run that failed after `--from` copied the
            # reference's artifacts in still holds the reference's evals, which would read as "no effect"
            raise FileNotFoundError(f"compare: {run} has no metrics.json: the run did not finish (failed or "
                                    f"still running); its artifacts may be copies of the --from run's")
        pred = {n: read_jsonl(run / "eval" / n / "predictions.jsonl") for n in ("rft", last)}
        loaded.append((run, last, pred))
    ref_run, ref_last, ref_pred = loaded[0]
    ref_rft = {r["id"]: r.get("response") for r in ref_pred["rft"]}
    ref_model = _model_hash(ref_run / ref_last / "align")
    out = []
    for run, last, pred in loaded:
        model = _model_hash(run / last / "align")
        entry = {"run": str(run), "label": run.name, "settings": run_settings(run), "last": last,
                 "same_rft": {r["id"]: r.get("response") for r in pred["rft"]} == ref_rft,
                 "same_last_model": model is not None and model == ref_model,
                 "vs_rft": compare_rounds(pred["rft"], pred[last])}
        if run != ref_run:
            entry["vs_reference"] = compare_rounds(ref_pred[ref_last], pred[last])
        out.append(entry)
    return {"reference": str(ref_run), "runs": out}


def _delta(v: dict[str, Any] | None) -> str:
    if not v or v.get("diff") is None:
        return "–"
    return f"{v['diff']:+.3f} {_ci(v['ci95'])}".strip()


def comparison_markdown(comp: dict[str, Any]) -> str:
    """The ablation section: one row per run, last − RFT and last − reference with 95% paired CIs."""
    rows = [["run", "settings", "last", "paired n", "factuality Δ vs RFT", "accuracy Δ vs RFT",
             "consistency Δ vs RFT", "format Δ vs RFT", "factuality Δ vs reference", "accuracy Δ vs reference"]]
    for e in comp["runs"]:
        st, d, r = e["settings"], e["vs_rft"], e.get("vs_reference")
        setting = (f"{st['rounds']} round(s), score {st['score_mode'] or '?'}, judge {st['judge'] or '?'}, "
                   f"{st['aggregation'] or '?'}; pairs {st['pairs']}" + ("" if e["same_rft"] else "; other RFT")
                   + ("; SAME last model as the reference" if r is not None and e["same_last_model"] else ""))
        rows.append([e["label"], setting, e["last"], str(d["accuracy"]["n"]),  # factuality: fewer (claims)
                     _delta(d["rationale_factuality"]), _delta(d["accuracy"]), _delta(d["consistency"]),
                     _delta(d["rap_format"]), _delta((r or {}).get("rationale_factuality")) if r else "reference",
                     _delta((r or {}).get("accuracy")) if r else "reference"])
    return ("## Ablations (paired bootstrap 95% CIs on the shared eval items)\n\n"
            f"Reference: `{comp['reference']}`. Δ vs RFT = the run's last round − its RFT model; Δ vs reference "
            "= the run's last round − the reference's last round.\n\n" + _md_table(rows))


def write_comparison(runs: list[str | Path], out: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """``srcal compare``: the comparison as (dict, markdown); with ``out``, also ``ablations.json`` and
    ``ablations.md`` there."""
    comp = compare_runs(runs)
    md = comparison_markdown(comp)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "ablations.json").write_text(json.dumps(comp, indent=2) + "\n")
        (Path(out) / "ablations.md").write_text(md)
    return comp, md


def run_report(recipe, inputs: dict[str, Path], out: Path, **options: Any) -> dict[str, Any]:
    """Stage ``report``: ``metrics.json``, ``report.md``, ``report.html`` (+ ``plots/*.png``) into ``out``."""
    t0 = time.time()
    c = collect(recipe, inputs)
    metrics = build_metrics(recipe, c)
    plots = {}
    for name, fn, arg in (("metrics_by_round", plot_metrics_by_round, c["rounds"]),
                          ("per_category", plot_per_category, c["rounds"]),
                          ("judge_confidence", plot_confidence_hist, c["curation"]),
                          ("kept_dropped", plot_kept_dropped, c["curation"])):
        if arg:
            png = fn(arg)
            if png:
                plots[name] = png
    md, page = render(recipe, metrics, c, plots)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    for name, png in plots.items():
        (out / "plots" / f"{name}.png").write_bytes(png)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(page)
    return {"counts": {"models": len(c["rounds"]), "plots": len(plots)},
            "timings_s": {"report": round(time.time() - t0, 3)}}
