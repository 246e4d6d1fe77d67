"""The mappers of the scale-out: ``map_fn(fn, items) -> results`` (in item order).

``local_map`` runs in this process; ``dask_map`` (a context manager) on a local Dask cluster or
the scheduler at ``address``. A leaf module: ``scaleout/__init__`` and ``scaleout/scoring``
import it, it imports neither.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


def local_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """The in-process mapper: ``[fn(x) for x in items]``."""
    return [fn(item) for item in items]


@contextmanager
def dask_map(*, address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1
             ) -> Iterator[Mapper]:
    """A mapper on Dask: a local cluster of ``n_workers`` processes (loopback only, no
    dashboard), or the scheduler at ``address``. Results come back in item order; the first
    failed item raises here."""
    from distributed import Client, LocalCluster

    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                               processes=True, host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)

    def mapper(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if not items:
            return []
        return client.gather(client.map(fn, list(items), pure=False))

    try:
        yield mapper
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
