"""Loaded at start-up by every kfp.local task subprocess of tests/test_components.py's *wiring* test.

When ``SRCAL_STANDIN_STAGES=1`` it points every stage except ``data`` and ``report`` at
:func:`standin_stages.standin_stage`, which writes the files downstream stages read; with a comma list
of stage names it stands in only those. It exists so the
whole KFP graph (every component body, every artifact hand-off, ParallelFor, Collected, the exit
handler, the export to S3) runs under kfp.local in about a minute while the heavy stages are being
built; the slow test in the same file runs the real stages.
"""

import os

_WANT = os.environ.get("SRCAL_STANDIN_STAGES", "")
if _WANT:
    from srcal import stages as _stages

    _ALL = ["base", "rft", "eval", "rscorer-data", "rscorer-train", "search", "search-merge", "score", "curate",
            "align"]
    # "1": every stage but data and report; else a comma list (e.g. the judge stages only, for a run that is
    # otherwise real: the stand-in score then reads candidates and judges by answer correctness).
    for _name in (_ALL if _WANT == "1" else _WANT.split(",")):
        _fn = "standin_score" if (_name == "score" and _WANT != "1") else "standin_stage"
        _stages.STAGES[_name] = (f"standin_stages:{_fn}", ("seed",))
