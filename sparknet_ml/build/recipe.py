"""Our own build recipe for pycaffe: protoc, parallel g++/nvcc compiles, one shared extension.

Caffe's Makefile/CMake are not used. Every Caffe object and the Boost.Python bindings are
linked into a single ``caffe/_caffe<EXT_SUFFIX>`` so the wheel needs no ``libcaffe.so`` beside
it. Built without OpenCV, LevelDB, LMDB and the Python layer (which runs arbitrary Python named
by a prototxt, so it is left out on purpose); a CUDA build uses cuDNN 9 when it is found.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_CPP_DIRS = ("src/caffe", "src/caffe/layers", "src/caffe/util", "src/caffe/solvers",
             "src/caffe/3rdparty")
_CU_DIRS = ("src/caffe/layers", "src/caffe/util", "src/caffe/solvers")
_CXX_FLAGS = ("-O2", "-fPIC", "-std=c++14", "-DNDEBUG", "-w")
# CUDA 13's thrust/CUB need C++17.
_NVCC_FLAGS = ("-O2", "-std=c++17", "-DNDEBUG", "-w", "-Xcompiler", "-fPIC")
_LIBS = ("glog", "gflags", "protobuf", "boost_thread", "boost_filesystem", "hdf5_serial_hl",
         "hdf5_serial", "openblas", "pthread")
_CUDA_LIBS = ("cudart", "cublas", "curand")
# Where Debian/Ubuntu and NVIDIA's packages put cudnn_version.h, besides $CUDA_HOME/include.
_CUDNN_INCLUDE_DIRS = ("/usr/include", "/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu")
_HDF5_INCLUDE = "/usr/include/hdf5/serial"


class BuildError(RuntimeError):
    """A compile or link step failed; the message carries the compiler's output."""


@dataclass(frozen=True)
class Target:
    """What to compile for: the running interpreter, and optionally one CUDA architecture."""

    cuda_arch: str = ""          # "" = CPU-only build
    cuda_home: str = "/usr/local/cuda"
    cudnn_include: str = ""      # folder of cudnn.h; "" = no cuDNN
    jobs: int = os.cpu_count() or 1

    @property
    def cuda(self) -> bool:
        return bool(self.cuda_arch)

    @property
    def cudnn(self) -> bool:
        return self.cuda and bool(self.cudnn_include)


def find_cudnn(cuda_home: str) -> tuple[str, str] | None:
    """Return ``(version, include folder)`` of a cuDNN 9 or later found in ``cuda_home/include``
    or the system include folders, else None (older cuDNN has the API Caffe's layers were
    written for, which our patches replace)."""
    for folder in (os.path.join(cuda_home, "include"), *_CUDNN_INCLUDE_DIRS):
        header = os.path.join(folder, "cudnn_version.h")
        if not os.path.exists(os.path.join(folder, "cudnn.h")) or not os.path.exists(header):
            continue
        with open(header) as f:
            fields = dict(re.findall(r"#define CUDNN_(MAJOR|MINOR|PATCHLEVEL)\s+(\d+)", f.read()))
        if len(fields) == 3 and int(fields["MAJOR"]) >= 9:
            return f"{fields['MAJOR']}.{fields['MINOR']}.{fields['PATCHLEVEL']}", folder
    return None


def python_tag() -> str:
    """Return the CPython tag of the running interpreter, e.g. ``"cp311"``."""
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{what} failed (exit {done.returncode}):\n  {' '.join(cmd)}\n"
                         f"{(done.stdout + done.stderr).strip()[-4000:]}")


def generate_protobuf(src: str) -> None:
    """Regenerate caffe.pb.h/.cc and caffe_pb2.py from caffe.proto with the system protoc,
    laid out as Caffe's own Makefile does (the .cc includes ``caffe/proto/caffe.pb.h``)."""
    proto = os.path.join(src, "src/caffe/proto/caffe.proto")
    _run(["protoc", f"-I{os.path.join(src, 'src')}", f"--cpp_out={os.path.join(src, 'src')}",
          proto], "protoc (C++)")
    _run(["protoc", f"-I{os.path.dirname(proto)}",
          f"--python_out={os.path.join(src, 'python/caffe/proto')}", proto], "protoc (Python)")
    os.replace(os.path.join(src, "src/caffe/proto/caffe.pb.h"),
               os.path.join(src, "include/caffe/proto/caffe.pb.h"))


def _sources(src: str, dirs: tuple[str, ...], suffix: str) -> list[str]:
    return sorted(f for d in dirs for f in glob.glob(os.path.join(src, d, f"*{suffix}")))


def _include_flags(src: str) -> list[str]:
    import numpy  # the target interpreter's numpy: its headers define the array ABI
    dirs = [os.path.join(src, "include"), _HDF5_INCLUDE, sysconfig.get_paths()["include"],
            numpy.get_include()]
    return [f"-I{d}" for d in dirs]


@dataclass(frozen=True)
class _Compile:
    command: list[str]  # without the output file
    source: str
    obj: str


def _compile_jobs(src: str, obj_dir: str, target: Target, version: str) -> list[_Compile]:
    includes = _include_flags(src)
    defines = [f"-DCAFFE_VERSION={version}"]
    if not target.cuda:
        defines += ["-DCPU_ONLY"]
    else:  # the per-thread default stream, which a CUDA graph can capture (cuda-graph-step)
        defines += [f"-I{target.cuda_home}/include", "-DCUDA_API_PER_THREAD_DEFAULT_STREAM"]
    if target.cudnn:
        defines += ["-DUSE_CUDNN", f"-I{target.cudnn_include}"]
    jobs = []
    files = _sources(src, _CPP_DIRS, ".cpp") + [os.path.join(src, "src/caffe/proto/caffe.pb.cc"),
                                               os.path.join(src, "python/caffe/_caffe.cpp")]
    for path in files:
        jobs.append((["g++", "-c", *_CXX_FLAGS, *defines, *includes, path], path))
    if target.cuda:
        arch = (f"-gencode=arch=compute_{target.cuda_arch},"
                f"code=[sm_{target.cuda_arch},compute_{target.cuda_arch}]")
        nvcc = os.path.join(target.cuda_home, "bin/nvcc")
        for path in _sources(src, _CU_DIRS, ".cu"):
            jobs.append(([nvcc, "-c", *_NVCC_FLAGS, "--default-stream=per-thread", arch, *defines,
                          *includes, path], path))
    return [_Compile(cmd, path,
                     os.path.join(obj_dir, os.path.relpath(path, src).replace("/", "__") + ".o"))
            for cmd, path in jobs]


def _compile_one(job: _Compile, log) -> str | None:
    """Compile one source; return the compiler's error text, or None on success."""
    if os.path.exists(job.obj):  # objects are written atomically, so an existing one is complete
        return None
    try:
        _run(job.command + ["-o", job.obj + ".tmp"], f"compiling {os.path.basename(job.source)}")
    except BuildError as err:
        log(f"FAILED {os.path.basename(job.source)}")
        return str(err)
    os.replace(job.obj + ".tmp", job.obj)
    log(f"compiled {os.path.basename(job.source)}")
    return None


def build_extension(src: str, build_dir: str, target: Target, version: str, log=print) -> str:
    """Compile the patched Caffe sources in ``src`` into ``build_dir/_caffe<EXT_SUFFIX>``.

    Objects already in ``build_dir/obj`` are reused, so an interrupted build resumes.
    ``version`` becomes pycaffe's ``caffe.__version__``.

    Returns
    -------
    str
        Path of the linked Python extension module.
    """
    obj_dir = os.path.join(build_dir, "obj")
    os.makedirs(obj_dir, exist_ok=True)
    if not os.path.exists(os.path.join(src, "include/caffe/proto/caffe.pb.h")):
        generate_protobuf(src)
    jobs = _compile_jobs(src, obj_dir, target, version)
    log(f"compiling {len(jobs)} files with {target.jobs} jobs")
    with ThreadPoolExecutor(max_workers=target.jobs) as pool:
        errors = [e for e in pool.map(lambda job: _compile_one(job, log), jobs) if e]
    if errors:  # every failure at once: a CUDA build is too slow to find them one by one
        raise BuildError(f"{len(errors)} of {len(jobs)} files failed to compile:\n\n"
                         + "\n\n".join(errors))
    objects = [job.obj for job in jobs]
    ext = os.path.join(build_dir, "_caffe" + sysconfig.get_config_var("EXT_SUFFIX"))
    libs = list(_LIBS) + [boost_python_lib()]
    lib_dirs = []
    if target.cuda:
        libs += _CUDA_LIBS + (("cudnn",) if target.cudnn else ())
        lib_dirs = [f"-L{target.cuda_home}/lib64", f"-Wl,-rpath,{target.cuda_home}/lib64"]
    _run(["g++", "-shared", "-o", ext, *objects, *lib_dirs, "-Wl,--as-needed",
          *[f"-l{lib}" for lib in libs]], "linking _caffe")
    _check_no_undefined_caffe_symbols(ext)
    return ext


def _check_no_undefined_caffe_symbols(ext: str) -> None:
    """Fail when Caffe's own code is left undefined (Python's symbols are resolved at import)."""
    done = subprocess.run(["nm", "--dynamic", "--undefined-only", "--demangle", ext],
                          capture_output=True, text=True, check=True)
    missing = sorted({line.split(None, 1)[1] for line in done.stdout.splitlines()
                      if "caffe::" in line})
    if missing:
        raise BuildError(f"{len(missing)} Caffe symbols are declared but never defined:\n  "
                         + "\n  ".join(missing))


def boost_python_lib() -> str:
    """Return the Boost.Python library name for the running interpreter, e.g. ``boost_python311``."""
    return f"boost_python{sys.version_info.major}{sys.version_info.minor}"


def check_extension_imports(package_dir: str) -> None:
    """Import the freshly built ``caffe`` package in a subprocess, warnings as errors for its
    protobuf module, so a broken build never reaches the cache."""
    probe = ("import warnings; warnings.simplefilter('error');"
             "import caffe.proto.caffe_pb2 as pb; pb.NetParameter(name='probe');"
             "warnings.resetwarnings(); import caffe; caffe.set_mode_cpu()")
    env = dict(os.environ, PYTHONPATH=package_dir, GLOG_minloglevel="2")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          cwd=package_dir)
    if done.returncode != 0:
        raise BuildError(f"the built caffe package does not import:\n{done.stderr.strip()[-3000:]}")


def stage_package(src: str, ext: str, stage_dir: str) -> str:
    """Lay out the importable ``caffe`` package (pycaffe sources + extension) in ``stage_dir``."""
    pkg = os.path.join(stage_dir, "caffe")
    shutil.rmtree(stage_dir, ignore_errors=True)
    shutil.copytree(os.path.join(src, "python/caffe"), pkg,
                    ignore=shutil.ignore_patterns("test", "imagenet", "__pycache__", "*.cpp",
                                                  "*.pyc"))
    shutil.copy2(ext, pkg)
    return pkg
