"""Console logging of a run (the CLI's commands and flows/ scripts call ``setup_logging``)."""

from __future__ import annotations

import logging

NOISY_LOGGERS = ("alembic", "mlflow", "urllib3", "botocore", "dvc", "filelock", "httpx")


def setup_logging(verbose: bool) -> None:
    """One handler on the ``synthloop`` package logger, INFO (DEBUG when ``verbose``).

    Our own handler, not the root logger's: Prefect (in flows/) reconfigures the root logger.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    pkg = logging.getLogger("synthloop")
    pkg.handlers[:] = [handler]
    pkg.setLevel(logging.DEBUG if verbose else logging.INFO)
    pkg.propagate = False
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
