"""Serving under load: a champion swap while 1, 4 and 16 clients keep sending (issue 13).

Correctness, not speed (benchmarks/serve_load.py times it): no failed request, every answer from
one of the two complete versions, each client old -> new. One row per client count.
"""

from __future__ import annotations

import pytest

from synthloop.serve import loadcheck

pytestmark = pytest.mark.slow

# (clients, requests before the swap, requests sent after it returned)
LEVELS = ((1, 3, 3), (4, 8, 8), (16, 16, 16))


def test_champion_swaps_under_load_drop_nothing(tmp_path, report):
    pytest.importorskip("uvicorn")
    from serve_support import swap_scene

    rows = []
    with swap_scene(tmp_path) as scene:
        before, after = scene.versions
        for clients, swap_after, after_swap in LEVELS:
            run = loadcheck.run(scene.url, scene.image, clients=clients, requests=swap_after,
                                swap=scene.swap_to(after), swap_after=swap_after,
                                after_swap=after_swap, max_requests=4 * (swap_after + after_swap),
                                max_seconds=240)
            problems = loadcheck.swap_problems(run, before=before, after=after,
                                               expected=scene.expected)
            assert problems == [], (clients, problems)
            rows.append((clients, swap_after, after_swap, before, after))
            before, after = after, before  # the next level swaps back
    for clients, swap_after, after_swap, old, new in rows:
        report(f"serving: champion swap under load ({clients} concurrent client"
               f"{'s' if clients > 1 else ''}; alias moved v{old} -> v{new} after {swap_after} "
               "answers)",
               "no request failed; every answer named v1 or v2 and carried exactly the detections "
               "of that version's completely loaded model; each client saw the old version, then "
               "the new one, never back",
               f"n/a: no restart; every request sent after the swap returned (at least "
               f"{after_swap}) got v{new}")
