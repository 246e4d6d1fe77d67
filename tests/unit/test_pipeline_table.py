"""The pipeline's closing table says in plain words when a time cap cut training short."""

from __future__ import annotations

from synthloop.stages.pipeline import CycleSummary, format_table


def row(cycle: int, **train: float) -> CycleSummary:
    return CycleSummary(cycle, 10 * cycle, 10 if cycle else 0, {"AP": 0.4, "AP50": 0.8, **train},
                        True, str(cycle + 1), "")


def test_time_capped_training_is_said_in_the_table() -> None:
    text = format_table([row(0, train_steps=466.0, train_planned_steps=810.0, train_time_capped=1.0),
                         row(1, train_steps=30.0, train_planned_steps=30.0, train_time_capped=0.0)])
    assert "pretraining hit its time cap after 466 of 810 planned steps" in text
    assert "cycle 1" not in text


def test_no_note_when_the_step_budget_ran_out() -> None:
    text = format_table([row(0, train_steps=810.0, train_planned_steps=810.0, train_time_capped=0.0),
                         row(2, train_steps=3.0, train_planned_steps=30.0, train_time_capped=1.0)])
    assert "NOTE" in text and "cycle 2's fine-tuning hit its time cap after 3 of 30" in text
    assert "pretraining" not in text
    assert "NOTE" not in format_table([row(0)])  # records from before these metrics existed
