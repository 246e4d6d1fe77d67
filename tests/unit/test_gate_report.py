"""The gate plot shows the per-class non-regression check beside the PR curves and bootstrap."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from synthloop.artifacts import ClassDrop  # noqa: E402
from synthloop.gating.report import class_drop_panel, gate_figure  # noqa: E402

DROPS = (ClassDrop("bolt", 0.8, 0.6, -0.2, False, -0.35, -0.05),
         ClassDrop("nut", 0.6, 0.7, 0.1, True))


def test_each_class_is_a_bar_red_where_it_blocks_promotion_with_its_interval():
    fig, ax = plt.subplots()
    class_drop_panel(ax, DROPS, 0.05)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["bolt", "nut"]
    bars = ax.patches
    assert [round(b.get_width(), 6) for b in bars] == [-0.2, 0.1]
    assert bars[1].get_facecolor() == to_rgba("C3") and bars[0].get_facecolor() != to_rgba("C3")
    whiskers = [line.get_xdata() for line in ax.lines if len(line.get_xdata()) == 2
                and line.get_xdata()[0] != line.get_xdata()[1]]
    assert [list(w) for w in whiskers] == [[-0.35, -0.05]]  # only bolt has a bootstrap interval
    assert "max drop 0.05" in ax.get_title()
    plt.close(fig)


def test_the_figure_is_written_without_predictions_too(tmp_path):
    """A point-rule decision has no cached predictions and no bootstrap: the class panel stays."""
    path = gate_figure(tmp_path / "g.png", None, None, None, labels=("c", "k"),
                       class_drops=DROPS, max_class_drop=0.05, rule="point (allowed by config)")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
