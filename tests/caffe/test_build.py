"""The build recipe against the real pinned sdist, and the portable (auditwheel) wheel."""
import os
import subprocess
import sys
import zipfile

import pytest

from sparknet_ml.build import patches, source
from sparknet_ml.build.cache import cache_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sdist():
    return source.resolve_source(None, os.path.join(cache_root(), "sources"))


def test_every_patch_applies_to_the_pinned_sdist(sdist, tmp_path):
    src = source.extract(sdist, str(tmp_path))
    assert not os.path.exists(os.path.join(src, "..", ".git"))
    assert patches.apply_patches(src) == [p.name for p in patches.PATCHES]
    assert not os.path.exists(os.path.join(src, "include/caffe/proto/caffe.pb.h"))
    io_py = open(os.path.join(src, "python/caffe/io.py")).read()
    assert "\nimport skimage" not in io_py and "    import skimage.io\n" in io_py
    assert "CPU_FALLBACK_GPU(UpsampleLayer);" in open(
        os.path.join(src, "src/caffe/layers/upsample_layer.cpp")).read()
    with pytest.raises(patches.PatchError, match="regenerate-protobuf"):
        patches.apply_patches(src)  # a second application finds nothing to change


@pytest.mark.skipif(sys.platform != "linux", reason="auditwheel repairs Linux wheels")
def test_portable_wheel_loads_its_own_shared_libraries(tmp_path):
    # `--portable` repairs the cached wheel for this Python (built by make setup).
    subprocess.run([sys.executable, "-m", "sparknet_ml.build", "--portable", "--skip-system-deps",
                    "--out", str(tmp_path / "dist")], check=True, cwd=REPO)
    (wheel_file,) = os.listdir(tmp_path / "dist")
    assert "manylinux" in wheel_file
    with zipfile.ZipFile(tmp_path / "dist" / wheel_file) as zf:
        zf.extractall(tmp_path / "site")
    probe = ("import caffe, sys; caffe.set_mode_cpu(); print(caffe.__file__);"
             "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') "
             "if '.so' in l.split()[-1]})))")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), LD_LIBRARY_PATH="")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          check=True)
    first, *loaded = done.stdout.split()
    assert first.startswith(str(tmp_path / "site"))
    for lib in ("libglog", "libgflags", "libprotobuf", "libboost_python", "libboost_thread",
                "libboost_filesystem", "libhdf5", "libopenblas"):
        paths = [path for path in loaded if os.path.basename(path).startswith(lib)]
        assert paths, f"{lib} was not loaded"
        assert all("/caffe.libs/" in path for path in paths), paths
