"""Candidate records (``candidates.jsonl`` rows), shards, per-round slices and seeds, and the resumable
writer that makes a killed search continue where it stopped."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from srcal.run import jsonl
from srcal.search.beam import Beam, SearchParams
from srcal.search.sentences import END_CUT


# --------------------------------------------------------------------------------------------- records


def candidate_record(sample: dict, beam: Beam, index: int, params: SearchParams) -> dict:
    """One ``candidates.jsonl`` row: the response text plus everything needed to audit how it was made."""
    from srcal.data.rap import parse_rap

    text = beam.text.strip()
    parsed = parse_rap(text, params.answer_prefix)
    return {
        "id": f"{sample['id']}#c{index}",
        "sample_id": sample["id"],
        "index": index,
        "text": text,
        "answer": parsed.answer,
        "rap_ok": parsed.ok,
        "sentences": [s.text for s in beam.sentences],
        "sentence_ends": [s.end for s in beam.sentences],
        "token_ids": [s.token_ids for s in beam.sentences],
        "token_logprobs": [[round(x, 5) for x in s.logprobs] for s in beam.sentences],
        "beam_id": beam.beam_id,
        "lineage": list(beam.lineage),
        "score": round(beam.score(params.length_normalize), 6),
        "sum_logprob": round(beam.sum_logprob, 5),
        "n_tokens": beam.n_tokens,
        "finish_reason": beam.finish_reason,
        "cut_sentences": sum(s.end == END_CUT for s in beam.sentences),
    }


# ---------------------------------------------------------------------------------------------- sharding


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n; a clear error otherwise."""
    if spec in (None, ""):
        return 0, 1
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise ValueError(f"shard {spec!r}: expected 'i/n', e.g. shard=0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {spec!r}: need 0 ≤ i < n")
    return i, n


def shard_slice(rows: Sequence[dict], i: int, n: int) -> list[dict]:
    """Every n-th row starting at i: deterministic, disjoint, covering, and balanced over categories
    (the split files interleave categories), unlike contiguous blocks."""
    return list(rows[i::n])


# ------------------------------------------------------------------------------------- rounds


def parse_round(name: str | None) -> int | None:
    """``"round3"`` → 3; anything else (None, ``"eval"``, a bench run) → None: not an SRC round."""
    if name and str(name).startswith("round") and str(name)[5:].isdigit() and int(str(name)[5:]) >= 1:
        return int(str(name)[5:])
    return None


def round_seed(master: int, k: int | None) -> int:
    """The master seed of round ``k``'s expansions: the recipe seed for round 1 (and outside rounds), a
    hash of (seed, k) after that, so round k never re-draws round 1's sentences even on the same sample."""
    if k is None or k == 1:
        return master
    return int.from_bytes(hashlib.sha256(f"{master}:round{k}".encode()).digest()[:8], "big") % (2**31 - 1)


def round_slice(rows: Sequence[dict], k: int | None, rounds: int, fresh: bool) -> list[dict]:
    """The calibration rows round ``k`` of ``rounds`` searches (``search.fresh_per_round``).

    Fresh: every ``rounds``-th row starting at k − 1 — disjoint across rounds, together covering the
    split, each slice balanced over categories like :func:`shard_slice` (the split interleaves them), so
    each round's DPO sees pairs from samples no earlier round used (issue 13: the same 240 samples searched
    every round with the same seeds gave ~ln 2 DPO loss from round 2 on). Not fresh, or not a round: all rows.
    """
    if not fresh or k is None:
        return list(rows)
    if k > rounds:
        raise ValueError(f"round {k} of a {rounds}-round recipe: no calibration slice for it")
    return list(rows[k - 1::rounds])


# ----------------------------------------------------------------------------------- resumable output


class CandidateWriter:
    """Append-only ``candidates.jsonl`` + ``rejected.jsonl`` with per-sample completion in ``done.jsonl``.

    A sample counts as done only once its line is in ``done.jsonl``, written *after* its candidates were
    flushed to disk. On open, candidate rows of samples that are not done (a crash mid-batch) and a torn
    last line are dropped, so a re-run continues from the last completed sample and emits no duplicates.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.paths = {k: self.out / f"{k}.jsonl" for k in ("candidates", "rejected", "done")}
        self.done: dict[str, dict] = {r["sample_id"]: r for r in self._read("done")}
        for kind in ("candidates", "rejected"):
            rows = self._read(kind)
            kept = [r for r in rows if r.get("sample_id") in self.done]
            if len(kept) != len(rows) or self._torn(kind):
                self._rewrite(kind, kept)

    def _read(self, kind: str) -> list[dict]:
        path = self.paths[kind]
        if not path.exists():
            return []
        return jsonl.read_jsonl(path)  # a torn last line from a killed run is skipped (and logged)

    def _torn(self, kind: str) -> bool:
        return jsonl.is_torn(self.paths[kind])

    def _rewrite(self, kind: str, rows: list[dict]) -> None:
        jsonl.write_jsonl(self.paths[kind], rows)

    def _append(self, kind: str, rows: list[dict]) -> None:
        jsonl.append_jsonl(self.paths[kind], rows)

    def commit(self, candidates: list[dict], rejected: list[dict], sample_ids: Sequence[str]) -> None:
        """Write one batch: candidates and rejections first, then the completion lines."""
        self._append("candidates", candidates)
        self._append("rejected", rejected)
        counts: dict[str, int] = {}
        for c in candidates:
            counts[c["sample_id"]] = counts.get(c["sample_id"], 0) + 1
        rejected_ids = {r["sample_id"] for r in rejected}
        done = [{"sample_id": s, "candidates": counts.get(s, 0), "rejected": s in rejected_ids} for s in sample_ids]
        self._append("done", done)
        self.done.update({d["sample_id"]: d for d in done})

    def candidates(self) -> list[dict]:
        return self._read("candidates")

    def rejected(self) -> list[dict]:
        return self._read("rejected")


