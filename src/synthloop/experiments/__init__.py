"""The pure parts of the paper's experiment grid: cells, folds, statistics, the report.
The orchestrator that runs them (``synthloop experiment``) is stages/experiment.py."""
