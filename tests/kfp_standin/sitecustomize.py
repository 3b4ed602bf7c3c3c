"""Loaded at start-up by every kfp.local task subprocess of tests/test_components.py's *wiring* test.

When ``SRCAL_STANDIN_STAGES=1`` it points every stage except ``data`` and ``report`` at
:func:`standin_stages.standin_stage`, which writes the files downstream stages read. It exists so the
whole KFP graph (every component body, every artifact hand-off, ParallelFor, Collected, the exit
handler, the export to S3) runs under kfp.local in about a minute while the heavy stages are being
built; the slow test in the same file runs the real stages.
"""

import os

if os.environ.get("SRCAL_STANDIN_STAGES") == "1":
    from srcal import stages as _stages

    for _name in list(_stages.STAGES) + ["base", "rft", "eval", "rscorer-data", "rscorer-train", "search",
                                           "search-merge", "score", "curate", "align"]:
        if _name not in ("data", "report"):
            _stages.STAGES[_name] = ("standin_stages:standin_stage", ("seed",))
