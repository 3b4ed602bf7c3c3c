"""RAP augmentation (:func:`augment`): a teacher turns each sample into a rationale-answer pair (RAP).

The oracle teacher in the shapes world, an OpenAI-compatible VLM endpoint for real data (the paper uses e.g.
Qwen2-VL-72B), or the dataset's own rationale where one ships. A RAP is kept only if its parsed answer
matches the ground truth (benchmark scoring rules, ``srcal.answers.score_answer``); every drop is counted by
reason. Teacher replies are cached in a JSONL keyed by teacher identity + sample, so a re-run never pays
twice.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from srcal.run import jsonl


def teacher_identity(recipe) -> dict[str, Any]:
    """What makes two teacher outputs interchangeable: the cache key's teacher part."""
    t = recipe.teacher
    ident: dict[str, Any] = {"kind": t.kind, "prefix": recipe.rap_answer_prefix}
    if t.kind == "openai":
        ident.update(url=t.url, model=t.model, prompt=t.prompt, max_tokens=t.max_tokens, temperature=t.temperature)
    if t.kind == "oracle":
        ident.update(seed=recipe.seed)
        if t.hallucination_rate > 0:  # only when set, so the perfect teacher's cache key is unchanged
            from srcal.world.teacher import HALLUCINATION_TEMPLATE

            # the phrasing too: a cache filled under another one must not be served
            ident.update(hallucination_rate=t.hallucination_rate, hallucination_template=HALLUCINATION_TEMPLATE)
        if t.describe_first:
            ident.update(describe_first=True)
    return ident


def sample_key(sample: dict) -> str:
    """Cache key of one sample: id, question and answer (an edited row is a new request)."""
    blob = json.dumps([sample["id"], sample["question"], sample["answer"], sample.get("choices")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class TeacherCache:
    """Append-only JSONL of teacher replies ``{"key", "id", "text"}``; later lines win.

    Only successful replies are cached (a reply whose answer is wrong is a success of the endpoint and is
    not asked again); failures are retried on the next run. Writes are flushed per line, so a killed run
    keeps what it paid for, and a torn last line is skipped on reading.
    """

    def __init__(self, path: Path):
        self.path = path
        rows = jsonl.read_jsonl(path, missing_ok=True)  # a torn last line from a killed run is skipped
        self.entries: dict[str, dict] = {rec["key"]: rec for rec in rows if "key" in rec}
        if jsonl.is_torn(path):  # so the next append starts on a line of its own
            jsonl.write_jsonl(path, rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the stage; closed in close())

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, rec: dict) -> None:
        self.entries[rec["key"]] = rec
        self._fh.write(jsonl.dumps_line(rec) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def teacher_cache_path(recipe, out: Path) -> Path:
    """Where teacher replies are cached: ``teacher.cache_dir`` if set, else the user cache.

    Keyed by the teacher identity, so changing the teacher's model or prompt starts a new file.
    """
    from srcal.run import store

    ident = hashlib.sha256(json.dumps(teacher_identity(recipe), sort_keys=True).encode()).hexdigest()[:16]
    root = Path(recipe.teacher.cache_dir) if recipe.teacher.cache_dir else store.cache_root() / "teacher"
    return root / f"{recipe.teacher.kind}-{ident}.jsonl"


def _endpoint_fn(recipe, data_dir: Path):
    """A function sample → RAP text that calls the OpenAI-compatible teacher (retries inside the client)."""
    from srcal.serve.client import OpenAIClient, image_part
    from srcal.data.rap import parse_rap
    from srcal.models.loading import question_text

    t = recipe.teacher
    client = OpenAIClient(t.url, t.model, concurrency=t.concurrency, timeout_s=t.timeout_s, retries=t.retries,
                          seed=recipe.seed)
    prefix = recipe.rap_answer_prefix

    def parse(text: str) -> str:
        if parse_rap(text, prefix).answer is None:  # retried by the client as "unparseable"
            raise ValueError(f"teacher reply has no '{prefix}' line: {text[:80]!r}")
        return text.strip()

    def ask(sample: dict) -> str:
        prompt = t.prompt.format(question=question_text(sample["question"], sample.get("choices")))
        msg = {"role": "user", "content": [image_part(data_dir / sample["image"]), {"type": "text", "text": prompt}]}
        return client.chat_text([msg], parse=parse, max_tokens=t.max_tokens, temperature=t.temperature)

    return client, ask


def augment(recipe, samples: list[dict], data_dir: Path, cache_path: Path) -> tuple[list[dict], list[dict], dict]:
    """Rationale-answer pairs for ``samples`` from the recipe's teacher, filtered by answer match.

    Returns (kept RAP rows ``{..sample, "rap", "teacher"}``, dropped rows with ``reason``, counts). Reasons:
    ``teacher_failed:<kind>`` (timeouts, 5xx, garbage after retries), ``no_answer`` (unparseable RAP),
    ``answer_mismatch`` (the RAP's answer is wrong), ``no_rationale`` (teacher kind ``dataset`` and the row
    ships none).
    """
    from collections import Counter

    from srcal.serve.client import Failure
    from srcal.data.rap import parse_rap, render_rap, split_sentences
    from srcal.answers import score_answer

    prefix = recipe.rap_answer_prefix
    kind = recipe.teacher.kind
    cache = TeacherCache(cache_path)
    texts: dict[str, str | Failure] = {}
    counts: Counter = Counter()
    try:
        todo = []
        for s in samples:
            k = sample_key(s)
            hit = cache.get(k)
            if hit is not None and "text" in hit:
                texts[s["id"]] = hit["text"]
                counts["cache_hits"] += 1
            elif kind == "oracle":
                from srcal.world import in_shapes_world

                if not in_shapes_world(s):
                    texts[s["id"]] = Failure("no_scene", "the oracle teacher needs a shapes-world scene")
                    continue
                from srcal.world.teacher import teacher_rap

                rng = random.Random(f"{recipe.seed}:teacher:{s['id']}")
                texts[s["id"]] = teacher_rap(s, rng, prefix, recipe.teacher.hallucination_rate,
                                           recipe.teacher.describe_first)
                cache.put({"key": k, "id": s["id"], "text": texts[s["id"]]})
            elif kind == "dataset" or (recipe.teacher.use_dataset_rationales and s.get("rationale")):
                if s.get("rationale"):
                    texts[s["id"]] = render_rap(split_sentences(s["rationale"]) or [s["rationale"].strip()],
                                                s["answer"], prefix)
                else:
                    texts[s["id"]] = Failure("no_rationale", "row ships no rationale")
            else:
                todo.append(s)
        if todo:
            client, ask = _endpoint_fn(recipe, data_dir)
            by_index = {i: s for i, s in enumerate(todo)}

            def on_done(i: int, res) -> None:
                s = by_index[i]
                if isinstance(res, Failure):
                    texts[s["id"]] = res
                else:
                    texts[s["id"]] = res
                    cache.put({"key": sample_key(s), "id": s["id"], "text": res})
                    counts["teacher_calls_ok"] += 1

            try:
                client.map_requests(todo, ask, on_done=on_done)
            finally:
                client.close()
    finally:
        cache.close()

    kept, dropped = [], []
    for s in samples:
        res = texts.get(s["id"])
        reason = None
        if isinstance(res, Failure) or res is None:
            fk = res.kind if isinstance(res, Failure) else "missing"
            reason = "no_rationale" if fk == "no_rationale" else f"teacher_failed:{fk}"
        else:
            parsed = parse_rap(res, prefix)
            if parsed.answer is None:
                reason = "no_answer"
            elif not parsed.sentences:
                reason = "no_rationale"
            elif not score_answer(s, parsed.answer):
                reason = "answer_mismatch"
        if reason:
            counts[f"dropped:{reason}"] += 1
            dropped.append({"id": s["id"], "reason": reason, "teacher_output": res if isinstance(res, str) else
                            (res.reason if isinstance(res, Failure) else None)})
        else:
            kept.append({**s, "rap": res.strip(), "teacher": kind})
    counts["kept"] = len(kept)
    return kept, dropped, dict(counts)
