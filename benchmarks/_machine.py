"""What machine a benchmark ran on, its JSON result file, and timing on a noisy machine."""
import json
import os
import platform
import statistics
import subprocess
import time


def machine() -> dict:
    """Cores, CPU model and GPU (if nvidia-smi sees one) of this machine."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        gpu = None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "python": platform.python_version()}


def write(result: dict, path: str) -> None:
    """Write ``result`` plus this :func:`machine` as JSON to ``path``, creating its folder."""
    result = {**result, "machine": machine()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


def interleaved(fns, repeat, wait=None):
    """Median seconds per call of each of ``fns``: one warm-up call each, then ``repeat``
    passes calling each once in turn (the median drops the passes a noisy machine slows).
    ``wait``, called inside each timing after the call, waits for the work the call left
    queued (a GPU's kernels: without it, one call's tail is timed in the next call)."""
    wait = wait or (lambda: None)
    for fn in fns:
        fn()
        wait()
    seconds = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            started = time.perf_counter()
            fn()
            wait()
            seconds[i].append(time.perf_counter() - started)
    return [statistics.median(s) for s in seconds]
