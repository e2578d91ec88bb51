"""The Debian/Ubuntu packages Caffe's sources build against: check, and install as root."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

# What our recipe compiles and links against (see recipe._LIBS): protoc and the headers and
# libraries of glog, gflags, protobuf, Boost (Thread, Filesystem, Python), HDF5 and OpenBLAS.
BUILD_PACKAGES = ("g++", "protobuf-compiler", "libprotobuf-dev", "libgoogle-glog-dev",
                  "libgflags-dev", "libboost-thread-dev", "libboost-filesystem-dev",
                  "libboost-python-dev", "libhdf5-dev", "libopenblas-dev")


class MissingPackagesError(RuntimeError):
    """Build packages are missing and cannot be installed by this process."""


def missing_packages(packages=BUILD_PACKAGES) -> list[str]:
    """Return the packages of ``packages`` that dpkg does not report as installed."""
    missing = []
    for name in packages:
        done = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", name],
                              capture_output=True, text=True)
        if not done.stdout.startswith("ii"):
            missing.append(name)
    return missing


def ensure_packages(packages=BUILD_PACKAGES, log=print) -> None:
    """Install missing ``packages`` with apt-get when running as root; else raise.

    Raises
    ------
    MissingPackagesError
        Naming every missing package and the command that installs them, when not root,
        or when apt-get fails.
    """
    if shutil.which("dpkg-query") is None:
        log("not a Debian/Ubuntu system: make sure these (or their equivalents) are installed: "
            + " ".join(packages))
        return
    missing = missing_packages(packages)
    if not missing:
        return
    command = "apt-get install -y --no-install-recommends " + " ".join(missing)
    if os.geteuid() != 0:
        raise MissingPackagesError(f"missing Debian packages: {' '.join(missing)}\n"
                                   f"install them as root with: {command}")
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], command.split() + ["-qq"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise MissingPackagesError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}")
    still = missing_packages(missing)
    if still:
        raise MissingPackagesError(f"apt-get did not install: {' '.join(still)}")


def check_library(name: str, hint: str) -> None:
    """Raise when the linker cannot find ``lib<name>.so`` (searched as g++ searches, so
    ``LIBRARY_PATH`` counts); ``hint`` says how to get it."""
    done = subprocess.run(["g++", f"-print-file-name=lib{name}.so"], capture_output=True, text=True)
    if not os.path.isabs(done.stdout.strip()):
        raise MissingPackagesError(f"lib{name}.so not found: {hint}")


def main(argv=None) -> int:
    """``python -m sparknet_ml.build.deps [PACKAGE ...]``: ensure packages (default: the build's)."""
    packages = tuple(argv if argv is not None else sys.argv[1:]) or BUILD_PACKAGES
    try:
        ensure_packages(packages)
    except MissingPackagesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
