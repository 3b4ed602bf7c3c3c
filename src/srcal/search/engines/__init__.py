"""Sentence-expansion engines for :mod:`srcal.search`.

An engine turns ``Expansion`` requests (a prepared prompt, the beam's token ids so far, ``n``, a seed)
into ``n`` sampled next sentences each (:class:`srcal.search.beam.Sentence`). Interface, duck-typed:

* ``prepare(sample, image) -> prompt`` with ``prompt.key`` (sample id) and ``prompt.n_tokens``;
* ``expand(requests) -> list[list[Sentence]]``, one list of ``n`` sentences per request;
* ``release(keys)``, ``close()``, and the attribute ``context_len``.

``hf``: :class:`srcal.search.engines.hf.HFEngine` (in-process transformers; ``batched=False`` is the naive
one-generate-per-beam loop the benchmark compares against). ``vllm``:
:class:`srcal.search.engines.vllm.VLLMEngine` (offline vLLM in its own virtualenv, via ``srcal.serve.vllm_worker``).
"""
