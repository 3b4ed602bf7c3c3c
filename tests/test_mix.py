"""srcal.data.mix: quotas by hand, disjoint deterministic splits, the ratio kept under shortage."""

from __future__ import annotations

import random

import pytest

from srcal.data.mix import category_quotas, fit_quotas, mix_splits, ratio_deviation


def pool(counts: dict[str, int], source="s") -> list[dict]:
    return [{"id": f"{source}-{c}-{i}", "category": c, "source": source}
            for c, n in counts.items() for i in range(n)]


def test_category_quotas_by_hand():
    """600 at 2:1:1 = 300/150/150 exactly; 10 at 2:1:1 = 5/2.5/2.5 → floors 5/2/2, the one left over
    goes to the first of the tied remainders (chart); 7 at 1:1:1 = 2.33 each → 3/2/2."""
    assert category_quotas(600, [2, 1, 1]) == {"perception": 300, "chart": 150, "math": 150}
    assert category_quotas(10, [2, 1, 1]) == {"perception": 5, "chart": 3, "math": 2}
    assert category_quotas(7, [1, 1, 1]) == {"perception": 3, "chart": 2, "math": 2}
    assert category_quotas(5, [1, 0, 0]) == {"perception": 5, "chart": 0, "math": 0}
    assert sum(category_quotas(12345, [2, 1, 1]).values()) == 12345


def test_fit_quotas_shrinks_to_keep_the_ratio():
    """50 math rows fit 100 at 2:1:1 (quota 25 math). With 20 math rows the largest n is 82: 82·¼ = 20.5 →
    floors 41/20/20, the spare one goes to the first tied remainder (chart) → 41/21/20; n = 83 would need
    83·¼ = 20.75 → 21 math rows."""
    assert fit_quotas(100, [2, 1, 1], {"perception": 99, "chart": 99, "math": 50}) == \
        {"perception": 50, "chart": 25, "math": 25}
    assert fit_quotas(100, [2, 1, 1], {"perception": 99, "chart": 99, "math": 20}) == \
        {"perception": 41, "chart": 21, "math": 20}


def test_splits_disjoint_on_ratio_and_deterministic():
    rows = pool({"perception": 900, "chart": 500, "math": 450}, "a") + pool({"chart": 100, "math": 100}, "b")
    sizes = {"rft": 600, "calib": 240, "eval": 300}
    splits, report = mix_splits(rows, sizes, [2, 1, 1], seed=3)
    ids = [{r["id"] for r in splits[s]} for s in ("rft", "calib", "eval")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    for s, n in sizes.items():
        assert report[s]["n"] == n and "shortfall" not in report[s]
        assert ratio_deviation(report[s]["by_category"], [2, 1, 1]) <= 0.03
    assert set(report["rft"]["by_source"]) == {"a", "b"}, "both sources feed the chart/math quota"
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert mix_splits(shuffled, sizes, [2, 1, 1], seed=3)[0] == splits, "input order does not matter"
    assert mix_splits(rows, sizes, [2, 1, 1], seed=4)[0]["rft"] != splits["rft"], "the seed does"


def test_eval_pool_feeds_eval_first_and_shortage_is_reported():
    rows = pool({"perception": 100, "chart": 50, "math": 30})
    bench = pool({"perception": 20, "chart": 10, "math": 10}, "bench")
    splits, report = mix_splits(rows, {"rft": 80, "calib": 40, "eval": 40}, [2, 1, 1], seed=0, eval_pool=bench)
    assert {r["source"] for r in splits["eval"]} == {"bench"}
    assert not any(r["source"] == "bench" for r in splits["rft"] + splits["calib"])
    # math: 30 rows, rft takes 20, so calib can only have 10 math → calib shrinks to 40 (20/10/10).
    assert report["calib"]["n"] == 40 and "shortfall" not in report["calib"]
    splits, report = mix_splits(rows, {"rft": 80, "calib": 60, "eval": 0}, [2, 1, 1], seed=0)
    # 10 math rows left after rft: the largest calib on ratio is 42 = 21/11/10 (10.5 → 10, chart takes the tie).
    assert report["calib"]["n"] == 42 and report["calib"]["requested"] == 60
    assert report["calib"]["by_category"] == {"perception": 21, "chart": 11, "math": 10}
    assert "math" in report["calib"]["shortfall"]


def test_duplicate_ids_across_sources_refused():
    with pytest.raises(ValueError, match="more than once"):
        mix_splits(pool({"chart": 3}), {"rft": 2}, [2, 1, 1], seed=0, eval_pool=pool({"chart": 1}))
