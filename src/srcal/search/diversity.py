"""The search summary's diversity report: how different the candidates are, and how many samples can
give a preference pair."""

from __future__ import annotations

from collections.abc import Sequence


def _sentence_set(rec: dict) -> frozenset[str]:
    from srcal.data.rap import split_sentences

    rationale = rec["text"]
    if rec.get("answer") is not None:
        idx = rationale.lower().rfind("answer:")
        rationale = rationale[:idx] if idx >= 0 else rationale
    return frozenset(" ".join(s.lower().split()) for s in split_sentences(rationale))


def _rationale(rec: dict) -> str:
    return " ".join(sorted(_sentence_set(rec))) if rec["text"] else ""


def is_correct(sample: dict, rec: dict, prefix: str) -> bool:
    """Correctness of one candidate by the rule evaluation and curation use (:mod:`srcal.answers`), so the
    report's ``share_mixed`` counts exactly the samples curation can pair with different answers."""
    from srcal.answers import response_correct

    return response_correct(sample, rec["text"], prefix)


def diversity_report(samples: dict[str, dict], candidates: Sequence[dict], prefix: str) -> dict:
    """How diverse and how useful for preference pairs the candidates are, averaged over samples.

    * ``distinct_rationales_exact``: distinct rationale texts (answer line removed, whitespace-normalised);
    * ``distinct_rationales_sentence_set``: distinct *sets* of sentences (reordering the same claims does
      not count as a new reasoning path); ``mean_pairwise_sentence_jaccard``: overlap of those sets;
    * ``share_mixed``: samples with at least one correct and one incorrect candidate — exactly those can
      give a (chosen, rejected) pair whose answers differ.
    """
    by_sample: dict[str, list[dict]] = {}
    for rec in candidates:
        by_sample.setdefault(rec["sample_id"], []).append(rec)
    if not by_sample:
        return {"samples": 0}
    n_c, answers, exact, sets, jac, toks, mixed, any_correct, acc = [], [], [], [], [], [], 0, 0, []
    for sid, recs in by_sample.items():
        sample = samples.get(sid)
        n_c.append(len(recs))
        answers.append(len({(r.get("answer") or "").strip().lower() for r in recs}))
        rationale_texts = []
        for r in recs:
            rat = r["text"]
            idx = rat.lower().rfind(prefix.strip().lower()) if prefix.strip() else -1
            rationale_texts.append(" ".join((rat[:idx] if idx >= 0 else rat).split()))
        exact.append(len(set(rationale_texts)))
        ss = [_sentence_set(r) for r in recs]
        sets.append(len(set(ss)))
        pairs = [(a, b) for i, a in enumerate(ss) for b in ss[i + 1:]]
        if pairs:
            jac.append(sum(len(a & b) / max(len(a | b), 1) for a, b in pairs) / len(pairs))
        toks += [r["n_tokens"] for r in recs]
        if sample is not None:
            flags = [is_correct(sample, r, prefix) for r in recs]
            acc.append(sum(flags) / len(flags))
            mixed += any(flags) and not all(flags)
            any_correct += any(flags)

    def mean(xs):
        return round(sum(xs) / len(xs), 4) if xs else None

    n = len(by_sample)
    judged = len(acc)  # samples whose ground truth we have
    return {
        "samples": n,
        "candidates": sum(n_c),
        "candidates_per_sample": mean(n_c),
        "min_candidates_per_sample": min(n_c),
        "distinct_answers": mean(answers),
        "distinct_rationales_exact": mean(exact),
        "distinct_rationales_sentence_set": mean(sets),
        "mean_pairwise_sentence_jaccard": mean(jac),
        "mean_tokens": mean(toks),
        "candidate_accuracy": mean(acc),
        "share_with_correct": round(any_correct / judged, 4) if judged else None,
        "share_mixed": round(mixed / judged, 4) if judged else None,
    }


