"""The paper's experiment grid (``synthloop experiment``) and its report."""
