"""Caffe's source: the pinned PyPI sdist ``brocolli-caffe``, fetched once and checked by sha256."""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

SDIST_NAME = "brocolli-caffe"
SDIST_VERSION = "9.0.2"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a"


class SourceError(RuntimeError):
    """The Caffe source could not be found, fetched or verified."""


def sha256_of(path: str) -> str:
    """Return the hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_source(source: str | None, cache_dir: str) -> str:
    """Return the path of a verified Caffe sdist.

    Parameters
    ----------
    source : str or None
        A local sdist file, or a directory holding ``brocolli-caffe-9.0.2.tar.gz``
        (e.g. ``.device-kit/``). ``None`` downloads the sdist with pip into ``cache_dir``
        (once; later calls reuse it).
    cache_dir : str
        Where a downloaded sdist is kept.

    Raises
    ------
    SourceError
        When the file is missing, the download fails, or its sha256 is not the pinned one.
    """
    if source is not None:
        path = os.path.join(source, SDIST_FILE) if os.path.isdir(source) else source
        if not os.path.isfile(path):
            raise SourceError(f"--source {source}: no file {path}")
    else:
        path = os.path.join(cache_dir, SDIST_FILE)
        if not os.path.isfile(path):
            _download(cache_dir)
    actual = sha256_of(path)
    if actual != SDIST_SHA256:
        raise SourceError(f"{path}: sha256 {actual} is not the pinned {SDIST_SHA256} "
                          f"of {SDIST_NAME}=={SDIST_VERSION}")
    return path


def _download(cache_dir: str) -> None:
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--quiet", "--dest", tmp, f"{SDIST_NAME}=={SDIST_VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = glob.glob(os.path.join(tmp, SDIST_FILE))
        if done.returncode != 0 or not found:
            raise SourceError(f"pip could not download {SDIST_NAME}=={SDIST_VERSION}: "
                              f"{done.stderr.strip()[-500:]}")
        os.replace(found[0], os.path.join(cache_dir, SDIST_FILE))


def extract(sdist: str, dest: str) -> str:
    """Extract the sdist below ``dest`` and return the source root.

    Only regular files and directories inside the archive root are extracted
    (the sdist carries a ``.git`` folder, which is skipped).
    """
    root = f"{SDIST_NAME}-{SDIST_VERSION}"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if (m.isfile() or m.isdir()) and m.name.split("/")[0] == root
                   and "/.git/" not in m.name + "/" and ".." not in m.name.split("/")]
        tar.extractall(dest, members=members, filter="data")
    return os.path.join(dest, root)
