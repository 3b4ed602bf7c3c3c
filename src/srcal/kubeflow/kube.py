"""The Kubernetes API client, configured once for every caller (KServe judge, TrainJob).

Inside a pod the service account is used; elsewhere the local kubeconfig (``$KUBECONFIG``, read at call
time: the client reads it once, at import, for its default).
"""

from __future__ import annotations

import os


def custom_objects_api():
    """A ``CustomObjectsApi`` from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.CustomObjectsApi()
