"""srcal on Kubeflow: the code the pipeline's components run, and the client that compiles and submits it.

* ``steps``: what a component body calls in the image (run a stage or a plan step on the artifacts' local
  paths, log metrics, export a run). It imports nothing from ``components/`` or ``pipelines/``.
* ``client``: ``srcal pipeline compile|submit|schedule``; it builds the pipeline from ``components/`` and
  ``pipelines/`` (above them).
* ``kserve``: the judge as a KServe InferenceService; ``trainjob``: multi-node training as a Kubeflow
  Trainer job; ``kube``: the Kubernetes API client both use.
"""
