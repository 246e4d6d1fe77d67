"""Reports people read: pure functions from records to self-contained HTML (no MLflow, no files).

``cycle_report``: one page per active-learning cycle (stages/cycle_report.py gathers its records,
writes the file and logs it to the cycle's MLflow run).
"""
