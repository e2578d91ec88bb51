"""Which GPU a task's Caffe uses: Spark's resource scheduling first, then CUDA_VISIBLE_DEVICES;
and what a task can train on, as it reports it to the driver.

No Spark imports: the task passes ``TaskContext.get().resources()`` in.
"""
from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass


def caffe_has_cuda() -> bool:
    """Whether this process's pycaffe was built with CUDA (from its build_info.json)."""
    from ..build.command import installed_build_info
    return bool((installed_build_info() or {}).get("cuda"))


@dataclass(frozen=True)
class TaskDevice:
    """What a process found it can train on: the fit's first job reports one per task, and
    the driver chooses the device from them (its own GPU, if any, does not count)."""

    host: str
    cuda_build: bool    # its pycaffe was built with CUDA
    gpu_visible: bool   # Spark assigned it a GPU, or the host has nvidia-smi
    gpu_assigned: bool  # Spark assigned it one (spark.task.resource.gpu.amount)


def task_device(resources: dict | None) -> TaskDevice:
    """This process's :class:`TaskDevice`; ``resources`` as for :func:`task_gpu`."""
    gpu = (resources or {}).get("gpu")
    assigned = bool(gpu is not None and gpu.addresses)
    return TaskDevice(socket.gethostname(), caffe_has_cuda(),
                      assigned or shutil.which("nvidia-smi") is not None, assigned)


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
