"""``sparknet-ml build-caffe`` / ``python -m sparknet_ml.build``: build, cache and install pycaffe."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from . import deps, patches, recipe, source, wheel
from .cache import BuildConfig, cache_root, cached_wheel, patch_set_version

CAFFE_VERSION = source.SDIST_VERSION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the build-caffe options to ``parser``."""
    parser.add_argument("--cuda", nargs="?", const="yes", default="no",
                        choices=("yes", "no", "auto"),
                        help="build with CUDA: yes (bare --cuda), no (default), auto = when nvcc "
                             "is found")
    parser.add_argument("--cuda-arch", default="auto",
                        help="SM architecture, e.g. 90 for H100/H200; auto asks nvidia-smi")
    parser.add_argument("--cuda-home", default=os.environ.get("CUDA_HOME", "/usr/local/cuda"),
                        help="CUDA toolkit root (default $CUDA_HOME or /usr/local/cuda)")
    parser.add_argument("--cudnn", default="auto", choices=("yes", "no", "auto"),
                        help="use cuDNN 9 in a CUDA build: auto (default) = when its headers "
                             "are found, yes = fail without it, no")
    parser.add_argument("--source", metavar="FILE",
                        help="a local brocolli-caffe-9.0.2.tar.gz, or a folder holding it "
                             "(default: download it with pip, sha256 checked)")
    parser.add_argument("--portable", action="store_true",
                        help="repair the wheel with auditwheel so it carries its shared libraries")
    parser.add_argument("--install", action="store_true",
                        help="pip install the wheel into this Python (skipped when the same "
                             "build is already installed)")
    parser.add_argument("--out", metavar="DIR", help="also copy the wheel into DIR")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel compile jobs (default: CPU count)")
    parser.add_argument("--skip-system-deps", action="store_true",
                        help="do not check Debian packages (the toolchain is set up otherwise, "
                             "e.g. by the GPU machine's kit)")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached wheel")


def _log(message: str) -> None:
    print(f"[build-caffe] {message}", flush=True)


def resolve_cuda(cuda: str, cuda_arch: str, cuda_home: str) -> str:
    """Return the CUDA architecture to build for, or ``""`` for a CPU-only build."""
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    if cuda == "no" or (cuda == "auto" and not os.path.exists(nvcc)):
        return ""
    if not os.path.exists(nvcc):
        raise recipe.BuildError(f"--cuda: no nvcc at {nvcc} (set --cuda-home)")
    if cuda_arch != "auto":
        if not cuda_arch.isdigit():
            raise recipe.BuildError(f"--cuda-arch {cuda_arch!r}: expected digits such as 90")
        return cuda_arch
    try:
        caps = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        raise recipe.BuildError("--cuda-arch auto: nvidia-smi found no GPU; name the "
                                "architecture, e.g. --cuda-arch 90") from None
    return caps[0].replace(".", "")


def resolve_cudnn(cudnn: str, cuda_arch: str, cuda_home: str) -> tuple[str, str]:
    """Return ``(version, include folder)`` of the cuDNN to build with, or ``("", "")``."""
    if cudnn == "no" or not cuda_arch:
        if cudnn == "yes":
            raise recipe.BuildError("--cudnn yes needs a CUDA build (--cuda)")
        return "", ""
    found = recipe.find_cudnn(cuda_home)
    if found is None and cudnn == "yes":
        raise recipe.BuildError(f"--cudnn yes: no cuDNN >= 9 headers (cudnn_version.h) under "
                                f"{cuda_home}/include or /usr/include")
    return found or ("", "")


def build_wheel(config: BuildConfig, sdist: str, target: recipe.Target, rebuild: bool) -> str:
    """Return the cached wheel for ``config``, building (and caching) it first when needed."""
    root = cache_root()
    wheel_dir = os.path.join(root, "wheels", config.key())
    found = cached_wheel(wheel_dir)
    if found and not rebuild:
        _log(f"cached wheel {found}")
        return found
    if config.portable:
        base = build_wheel(BuildConfig(**{**config.__dict__, "portable": False}), sdist, target,
                           rebuild)
        _log("repairing the wheel with auditwheel")
        return wheel.repair_wheel(base, wheel_dir)
    build_dir = os.path.join(root, "build", config.key())
    src = os.path.join(build_dir, f"{source.SDIST_NAME}-{source.SDIST_VERSION}")
    marker = os.path.join(build_dir, "patched.json")
    started = time.monotonic()
    if not os.path.exists(marker):
        shutil.rmtree(build_dir, ignore_errors=True)
        source.extract(sdist, build_dir)
        applied = patches.apply_patches(src)
        with open(marker, "w") as f:
            json.dump(applied, f)
        _log(f"applied patches: {', '.join(applied)}")
    ext = recipe.build_extension(src, build_dir, target, CAFFE_VERSION, log=_log)
    package = recipe.stage_package(src, ext, os.path.join(build_dir, "stage"))
    recipe.check_extension_imports(os.path.dirname(package))
    build_seconds = round(time.monotonic() - started, 1)
    info = {**config.__dict__, "key": config.key(), "caffe_version": CAFFE_VERSION,
            "patches": [p.name for p in patches.PATCHES], "build_seconds": build_seconds}
    version = f"{CAFFE_VERSION}+{config.variant()}.{config.key()[:8]}"
    built = wheel.write_wheel(package, version, config.python_tag, info, wheel_dir)
    shutil.rmtree(build_dir, ignore_errors=True)
    _log(f"built {built} in {build_seconds} s")
    return built


def installed_build_info() -> dict | None:
    """The ``build_info.json`` of the caffe installed in this Python (found without
    importing it), or None when there is no caffe or it was not built by us."""
    from importlib.util import find_spec
    spec = find_spec("caffe")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, wheel.BUILD_INFO)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    return None


def run(args: argparse.Namespace) -> int:
    """Carry out a build-caffe command; return the process exit code."""
    started = time.monotonic()
    try:
        if not args.skip_system_deps:
            deps.ensure_packages(log=_log)
        deps.check_library(recipe.boost_python_lib(), (
            f"Boost.Python must be built for this Python {sys.version.split()[0]}: the "
            "distribution's libboost-python-dev serves only its own python3; otherwise build "
            "libs/python from the Boost sources matching your Boost headers and put the "
            "library on LIBRARY_PATH and LD_LIBRARY_PATH"))
        cuda_arch = resolve_cuda(args.cuda, args.cuda_arch, args.cuda_home)
        cudnn_version, cudnn_include = resolve_cudnn(args.cudnn, cuda_arch, args.cuda_home)
        sdist = source.resolve_source(args.source, os.path.join(cache_root(), "sources"))
        config = BuildConfig(source_sha256=source.sha256_of(sdist),
                             python_tag=recipe.python_tag(), cuda=bool(cuda_arch),
                             cuda_arch=cuda_arch, portable=args.portable,
                             patch_set=patch_set_version(), cudnn=cudnn_version)
        target = recipe.Target(cuda_arch=cuda_arch, cuda_home=args.cuda_home,
                               cudnn_include=cudnn_include, jobs=args.jobs)
        _log(f"{config.variant()} build for {config.python_tag}, key {config.key()}")
        built = build_wheel(config, sdist, target, args.rebuild)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            shutil.copy2(built, args.out)
        if args.install:
            if (installed_build_info() or {}).get("key") == config.key() and not args.rebuild:
                _log("this build is already installed")
            else:
                subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                                "--force-reinstall", built, "--no-deps"], check=True)
                subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                                *wheel.REQUIRES], check=True)
                _log(f"installed {os.path.basename(built)}")
    except (deps.MissingPackagesError, source.SourceError, patches.PatchError,
            recipe.BuildError, subprocess.CalledProcessError) as err:
        print(f"build-caffe: error: {err}", file=sys.stderr)
        return 2
    _log(f"done in {time.monotonic() - started:.1f} s")
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m sparknet_ml.build``."""
    parser = argparse.ArgumentParser(prog="python -m sparknet_ml.build",
                                     description="Build, cache and install pycaffe.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
