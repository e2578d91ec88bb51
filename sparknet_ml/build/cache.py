"""The wheel cache: one directory per build key under ``~/.cache/sparknet_ml/``."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

# The files whose text defines how Caffe is patched, compiled and packed: any edit to them
# is a new "patch set version" and so a new cache key.
_RECIPE_MODULES = ("patches.py", "recipe.py", "wheel.py")


@dataclass(frozen=True)
class BuildConfig:
    """Everything a built pycaffe wheel depends on; its digest is the cache key.

    Attributes
    ----------
    source_sha256 : str
        sha256 of the Caffe sdist.
    python_tag : str
        CPython tag of the interpreter the extension is built for, e.g. ``"cp311"``.
    cuda : bool
        ``True`` for a CUDA build, ``False`` for CPU-only.
    cuda_arch : str
        SM architecture of a CUDA build (``"90"``), ``""`` for CPU-only.
    portable : bool
        Whether the wheel was repaired by auditwheel to carry its shared libraries.
    patch_set : str
        Digest of the patch and recipe modules (:func:`patch_set_version`).
    cudnn : str
        cuDNN version a CUDA build uses (``"9.14.0"``), ``""`` for none.
    """

    source_sha256: str
    python_tag: str
    cuda: bool
    cuda_arch: str
    portable: bool
    patch_set: str
    cudnn: str = ""

    def key(self) -> str:
        """Return the 16-hex-digit cache key of this configuration."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def variant(self) -> str:
        """Return the wheel's local version label: ``"cpu"``, ``"cuda90"`` or ``"cuda90cudnn9"``."""
        if not self.cuda:
            return "cpu"
        return f"cuda{self.cuda_arch}" + (f"cudnn{self.cudnn.split('.')[0]}" if self.cudnn else "")


def patch_set_version(directory: str | None = None) -> str:
    """Return a 12-hex-digit digest of the patch and recipe modules in ``directory`` and of
    the layer sources the patches add (its ``layers/`` folder)."""
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    layers = os.path.join(directory, "layers")
    added = sorted(os.listdir(layers)) if os.path.isdir(layers) else []
    names = [*_RECIPE_MODULES, *(os.path.join("layers", name) for name in added)]
    digest = hashlib.sha256()
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def cache_root() -> str:
    """Return the cache directory: ``$SPARKNET_ML_CACHE``, else ``$XDG_CACHE_HOME/sparknet_ml``,
    else ``~/.cache/sparknet_ml``."""
    if os.environ.get("SPARKNET_ML_CACHE"):
        return os.environ["SPARKNET_ML_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sparknet_ml")


def cached_wheel(wheel_dir: str) -> str | None:
    """Return the wheel file in ``wheel_dir``, or ``None`` when there is none."""
    if not os.path.isdir(wheel_dir):
        return None
    wheels = sorted(f for f in os.listdir(wheel_dir) if f.endswith(".whl"))
    return os.path.join(wheel_dir, wheels[0]) if wheels else None
