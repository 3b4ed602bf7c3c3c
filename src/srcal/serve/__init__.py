"""Talking to models that run outside this process: OpenAI-compatible endpoints and vLLM.

* ``client``: the one OpenAI-compatible client (teacher, remote judge), with retries and failure records.
* ``vllm_env``: where the vLLM virtualenv is and the environment a vLLM process needs on CPU machines;
  converting a checkpoint's weight names for vLLM.
* ``vllm_worker``: the parent side of an offline ``vllm.LLM`` in a child process (``VllmWorker``), used by
  the search's vLLM engine; ``vllm_child`` is the script that child runs (inside the vLLM venv).
* ``servers``: an OpenAI-compatible server process for the length of a block (the judge in a score step,
  the tests' endpoints).
"""
