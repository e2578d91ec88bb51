"""Which GPU a task's Caffe uses: Spark's resource scheduling first, then CUDA_VISIBLE_DEVICES.

No Spark imports: the task passes ``TaskContext.get().resources()`` in.
"""
from __future__ import annotations

import os


def task_gpu(resources: dict | None, environ=os.environ) -> int:
    """The CUDA device index (as Caffe numbers the visible devices) a task must use.

    Parameters
    ----------
    resources : dict or None
        ``TaskContext.resources()``: ``{"gpu": ResourceInformation(addresses=[...])}`` when
        ``spark.task.resource.gpu.amount`` is set; Spark gives concurrent tasks different
        addresses, so no two tasks share a GPU by accident.
    environ : mapping
        The process environment (``CUDA_VISIBLE_DEVICES``).

    Returns
    -------
    int
        The address Spark assigned, renumbered within ``CUDA_VISIBLE_DEVICES`` when that is
        set; without a Spark assignment, 0 (the first visible device).

    Raises
    ------
    ValueError
        When Spark assigned a GPU that ``CUDA_VISIBLE_DEVICES`` hides.
    """
    visible = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    gpu = (resources or {}).get("gpu")
    if gpu is None or not gpu.addresses:
        return 0
    address = gpu.addresses[0]
    if not visible:
        return int(address)
    if address not in visible:
        raise ValueError(f"Spark assigned GPU {address} but CUDA_VISIBLE_DEVICES="
                         f"{','.join(visible)} hides it")
    return visible.index(address)
