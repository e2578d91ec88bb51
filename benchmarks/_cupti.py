"""The GPU's kernels, memsets and copies of a stretch of a process's work, from NVIDIA's CUPTI
activity API through ctypes: one tracer for Caffe's process and PyTorch's (no profiler of
either framework, no Nsight on the GPU machine). Used by gpu_step_profile.py.

CUPTI is found in the CUDA toolkit or in the ``nvidia`` wheels beside torch. The records read
are the prefix every CUPTI version shares: kind, then start and end (ns) at bytes 16 and 24, and
for kernels the name pointer at byte 104 (CUpti_ActivityKernel4 and later); a record whose
fields do not read back as such is counted as unparsed.
"""
import ctypes
import glob
import os
import re
import sys

_KINDS = {1: "memcpy", 2: "memset", 10: "kernel"}  # CUPTI_ACTIVITY_KIND_*
_BUFFER_BYTES = 8 << 20
_REQUESTED = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)),
                              ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))
_COMPLETED = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32,
                              ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t, ctypes.c_size_t)
# Checked in order: the first pattern a kernel's (mangled) name matches names its category.
CATEGORIES = (("update", r"FusedUpdate|sgd|multi_tensor|foreach"),
              ("pooling", r"[Pp]ool"), ("lrn", r"[Ll][Rr][Nn]|CrossChannel"),
              ("softmax+loss", r"[Ss]oftmax|[Ll]oss|nll|DotAdd|SumDivided|RecordLoss"),
              ("convolution", r"conv|cudnn|xmma|implicit|winograd|fft|dgrad|wgrad|fprop"),
              ("gemm", r"gemm|gemv|cutlass|cublas|splitK|dot_kernel|reduce_1Block"),
              ("relu", r"[Rr]e[Ll][Uu]|clamp|threshold"))


def _library():
    roots = [os.environ.get("CUDA_HOME", "/usr/local/cuda"), "/usr/local/cuda*"]
    patterns = [f"{root}/extras/CUPTI/lib64/libcupti.so*" for root in roots]
    patterns += [f"{root}/lib64/libcupti.so*" for root in roots]
    patterns += [f"{path}/nvidia/*/lib/libcupti.so*" for path in sys.path if path]
    patterns += [f"{os.path.dirname(sys.executable)}/../lib/python3*/site-packages/nvidia/*/lib/"
                 "libcupti.so*"]
    found = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not found:
        raise RuntimeError("no libcupti.so in the CUDA toolkit or the nvidia wheels")
    return ctypes.CDLL(found[-1])


class KernelTrace:
    """``with KernelTrace() as trace: work(); synchronize()`` leaves ``trace.records``:
    (kind, name, start ns, end ns) of every kernel, memset and copy the GPU ran meanwhile,
    in start order."""

    _lib = None
    _callbacks = None
    _buffers: dict = {}
    _sink: list = []

    def __init__(self):
        self.records = []
        self.unparsed = 0

    @classmethod
    def _setup(cls):
        if cls._lib is not None:
            return
        lib = _library()

        def requested(buffer, size, most):
            array = (ctypes.c_uint64 * (_BUFFER_BYTES // 8))()
            cls._buffers[ctypes.addressof(array)] = array
            buffer[0] = ctypes.cast(array, ctypes.POINTER(ctypes.c_uint8))
            size[0] = _BUFFER_BYTES
            most[0] = 0

        def completed(_context, _stream, buffer, _size, valid):
            record = ctypes.c_void_p()
            while lib.cuptiActivityGetNextRecord(buffer, ctypes.c_size_t(valid),
                                                 ctypes.byref(record)) == 0:
                cls._sink.append(_read(record.value))
            cls._buffers.pop(ctypes.addressof(buffer.contents), None)

        cls._callbacks = (_REQUESTED(requested), _COMPLETED(completed))
        lib.cuptiActivityGetNextRecord.argtypes = [ctypes.POINTER(ctypes.c_uint8),
                                                   ctypes.c_size_t,
                                                   ctypes.POINTER(ctypes.c_void_p)]
        lib.cuptiActivityRegisterCallbacks.argtypes = [_REQUESTED, _COMPLETED]
        _check(lib.cuptiActivityRegisterCallbacks(*cls._callbacks), "RegisterCallbacks")
        cls._lib = lib

    def __enter__(self):
        self._setup()
        KernelTrace._sink = []
        for kind in _KINDS:
            _check(self._lib.cuptiActivityEnable(kind), f"Enable({kind})")
        return self

    def __exit__(self, *exc):
        _check(self._lib.cuptiActivityFlushAll(1), "FlushAll")  # CUPTI_ACTIVITY_FLAG_FLUSH_FORCED
        for kind in _KINDS:
            self._lib.cuptiActivityDisable(kind)
        kept = [r for r in KernelTrace._sink if r is not None]
        self.unparsed = sum(1 for r in KernelTrace._sink if r is None)
        self.records = sorted(kept, key=lambda r: r[2])
        return False


def _check(code, what):
    if code != 0:
        raise RuntimeError(f"CUPTI {what} failed with code {code}")


def _read(address):
    kind = _KINDS.get(ctypes.c_uint32.from_address(address).value)
    if kind is None:
        return None
    start = ctypes.c_uint64.from_address(address + 16).value
    end = ctypes.c_uint64.from_address(address + 24).value
    name = kind
    if kind == "kernel":
        raw = ctypes.c_char_p.from_address(address + 104).value
        name = raw.decode("ascii", "replace") if raw else ""
    if end < start or not name:
        return None
    return kind, name, start, end


def category(kind, name):
    """The category of a record: memset/memcpy, or by the first of :data:`CATEGORIES` that
    the kernel's name matches, else "other"."""
    if kind != "kernel":
        return kind
    return next((label for label, pattern in CATEGORIES if re.search(pattern, name)), "other")


def summary(records, iterations, wall_seconds):
    """Per iteration: records, GPU busy and span µs, the idle gaps, µs by category, and the
    eight kernels with the most time (name shortened)."""
    busy = sum(end - start for _, _, start, end in records) / 1e3 / iterations
    span = (records[-1][3] - records[0][2]) / 1e3 / iterations if records else 0.0
    by_category, by_name = {}, {}
    for kind, name, start, end in records:
        label = category(kind, name)
        by_category[label] = by_category.get(label, 0.0) + (end - start) / 1e3 / iterations
        count, total = by_name.get(name, (0, 0.0))
        by_name[name] = (count + 1, total + (end - start) / 1e3 / iterations)
    top = sorted(by_name.items(), key=lambda item: -item[1][1])[:8]
    return {"wall_us": round(wall_seconds * 1e6 / iterations, 1),
            "records": round(len(records) / iterations, 1),
            "busy_us": round(busy, 1), "span_us": round(span, 1),
            "idle_us": round(span - busy, 1),
            "by_category_us": {k: round(v, 1) for k, v in sorted(by_category.items(),
                                                                  key=lambda i: -i[1])},
            "top": [{"name": re.sub(r"^_Z\d+", "", name)[:70],
                     "per_iter": round(count / iterations, 2), "us": round(total, 1)}
                    for name, (count, total) in top]}
