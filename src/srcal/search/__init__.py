"""Stage 2: sentence-level beam search for diverse rationale candidates (SRC §3.2; CSR, NeurIPS 2024).

The paper branches the RFT model's output at sentence boundaries, so that candidates differ in their
*reasoning path*, not in phrasing; the candidates then go to pairwise scoring (stage 3). It publishes no
code, so the search is ours, with CSR's defaults (5 beams, ≤ 70 tokens per sentence). Per sample:

1. keep up to B beams (partial rationales), starting from the empty response;
2. at each step expand every unfinished beam into K sampled next *sentences* (engine call, below);
3. score each child by its cumulative token log-probability (optionally the per-token mean);
4. drop children whose text repeats another's (identical prefixes), move finished ones (answer line,
   EOS, sentence budget, context) to the finished pool, and keep B of the rest by ``keep_rule``:
   ``top`` = the B best, ``top_bottom`` = the best ⌈B/2⌉ and the worst ⌊B/2⌋ (CSR), which keeps
   weak-but-plausible paths alive so that preference pairs have a rejected side;
5. at the end pick N candidates from the finished pool by the same rule.

Engines (``srcal.search.engines``) only turn "these prefixes, K sentences each, these seeds" into sentences:
one call per step for *all* beams of all samples in the batch (:func:`beam_search`), so the HF engine
makes one ``generate`` per step and the vLLM engine one ``LLM.generate``. Everything here above the
engine is pure Python and unit-tested with a fake engine.

What a sentence is, exactly (shared by both engines through :class:`TokenTable`): a sentence ends at a
token that contains a delimiter followed by whitespace (``".\\n"``, ``"?\\n"``) or a whitespace delimiter
(``"\\n"``) after some content, or at a delimiter token (``"."``) *followed by* a token that starts with
whitespace or EOS. That one-token look-ahead is what keeps ``3.5`` in one sentence (plain ``"."`` stop
strings split decimals); the look-ahead token is dropped and re-sampled as the next
sentence's first token, so sentence token ids always concatenate to exactly the generated sequence.
Abbreviations (``e.g. the``) still split: a known, accepted limitation. A sentence that reaches
``max_sentence_tokens`` without an end is cut there and marked (``end == "cut"``).

Determinism: the randomness of each expansion is a pure function of (round seed, sample id, step, beam
index) (:func:`expansion_seed`), never of the batch it happens to run in, so shards, batch sizes and
resumed runs give the same candidates (up to floating-point differences of padding).

Fresh signal per round (``search.fresh_per_round``, default on): round k of R searches only its own
slice of the calibration split — every R-th sample from k − 1, disjoint across rounds — with a seed of
its own (:func:`round_slice`, :func:`round_seed`), so no round re-mines the samples an earlier round
already trained on.

Modules, in the order a candidate is made: ``sentences`` (where a sentence ends; seeds), ``beam`` (beams,
the keep rule, :func:`srcal.search.beam.beam_search`), ``engines`` (HF and vLLM expansion), ``candidates``
(records, shards, round slices, the resumable writer), ``diversity`` (the summary's report), ``stage``
(``run_search``, ``run_search_merge``). The search benchmark is ``srcal.bench.search``.
"""
