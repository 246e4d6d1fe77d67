"""Failures steer the renderer (issue 16, part 1), torch-free: where a detector fails
(failures.py) and the bounded sampling weights that follow (weights.py). stages/steer.py runs
them in the cycle; synthesis/randomizers.py samples with the weights."""
