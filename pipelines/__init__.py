"""The srcal KFP pipeline (``srcal_pipeline.py``) and its compiled, checked-in YAML."""
