"""srcal: Self-Rationale Calibration (SRC, ICML 2025) for vision-language models.

The core package is light on purpose: heavy dependencies (torch, transformers, trl, vllm, kfp, prefect,
deepspeed, boto3) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
