"""``data``: build (or import) the disjoint RFT / calibration / eval splits."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def data_op(recipe: str, overrides: str, data_uri: str, data: Output[Dataset], summary: Output[Dataset]):
    """Run the ``data`` stage into ``data``; with ``data_uri`` set, copy that finished artifact instead.

    ``data_uri`` lets a team build the splits once (``srcal data build --out s3://…``) and reuse them
    across scheduled runs; it must be a complete srcal artifact (completion marker present). ``summary``
    is a small extract (summary.json) for the report, so it does not download the images.
    """
    from srcal.kubeflow import steps

    if data_uri:
        steps.import_artifact(data_uri, data.path)
    else:
        steps.run_stage("data", recipe, overrides, {}, data.path)
    steps.extract_files(data.path, summary.path, ["summary.json"])
