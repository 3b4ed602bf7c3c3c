"""Stage 1 of SRC, rationale fine-tuning (RFT), and the base model it starts from.

* ``base`` (:mod:`srcal.rft.base`): the model SRC starts from. The paper starts from instruction-tuned LVLMs
  trained mostly on short answers; for the shapes world we build the tiny LLaVA (``srcal.models.tiny``) and
  fully fine-tune it on short answers (``base_train.jsonl``) — well above chance, still wrong often, so that
  calibration has room. Real recipes write a pointer to the hub id / path instead of copying weights.
* RAP augmentation (:mod:`srcal.rft.teacher`): a **teacher** turns each sample into a rationale-answer pair
  (RAP): the oracle teacher in the shapes world, an OpenAI-compatible VLM endpoint for real data (the paper
  uses e.g. Qwen2-VL-72B), or the dataset's own rationale where one ships. A RAP is kept only if its parsed
  answer matches the ground truth.
* ``rft`` (:mod:`srcal.rft.sft`): LoRA SFT with TRL on (plain question → RAP), resuming from checkpoints.

:mod:`srcal.rft.inputs` reads the data artifact's splits and images for both stages. Nothing is imported here,
so ``import srcal.rft.teacher`` stays light.
"""
