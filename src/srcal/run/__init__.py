"""Running a plan: the artifact store and the one JSONL reader, the local flow, torchrun on one node.

:mod:`.store` (artifacts local or on S3, completion markers, atomic publish) and :mod:`.jsonl` (the one
JSONL reader/writer) are what every stage reads and writes through; :mod:`.flow` runs the plan
(:mod:`srcal.graph`) as local Prefect steps (``srcal run``); :mod:`.distributed` launches and resumes
torchrun workers and hands out free ports. The table of stages (:mod:`srcal.stages`) and the plan
(:mod:`srcal.graph`) stay at the top: both orchestrators read them, this one and Kubeflow's.
"""
