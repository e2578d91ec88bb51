"""build-caffe's command line, CUDA resolution and system-package check (no compiling)."""
import os
import subprocess
import sys

import pytest

from sparknet_ml.build import command, deps, recipe
from sparknet_ml.build.recipe import BuildError


def test_cuda_resolution(tmp_path):
    no_cuda = str(tmp_path)  # a CUDA home without bin/nvcc
    assert command.resolve_cuda("no", "90", no_cuda) == ""
    assert command.resolve_cuda("auto", "90", no_cuda) == ""
    with pytest.raises(BuildError, match="no nvcc at"):
        command.resolve_cuda("yes", "90", no_cuda)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("")
    assert command.resolve_cuda("auto", "90", str(tmp_path)) == "90"
    assert command.resolve_cuda("yes", "80", str(tmp_path)) == "80"
    with pytest.raises(BuildError, match="expected digits"):
        command.resolve_cuda("yes", "sm_90", str(tmp_path))


def write_cudnn_headers(folder, major, minor=14, patch=0):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cudnn.h").write_text('#include "cudnn_version.h"\n')
    (folder / "cudnn_version.h").write_text(
        f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR {minor}\n#define CUDNN_PATCHLEVEL {patch}\n")


def test_cudnn_resolution(tmp_path):
    cuda_home = tmp_path / "cuda"
    (cuda_home / "include").mkdir(parents=True)
    if recipe.find_cudnn(str(cuda_home)) is not None:
        pytest.skip("this machine has cuDNN headers in a system include folder")
    assert command.resolve_cudnn("auto", "90", str(cuda_home)) == ("", "")
    with pytest.raises(BuildError, match="no cuDNN >= 9 headers"):
        command.resolve_cudnn("yes", "90", str(cuda_home))
    with pytest.raises(BuildError, match="needs a CUDA build"):
        command.resolve_cudnn("yes", "", str(cuda_home))
    write_cudnn_headers(cuda_home / "include", major=8)  # the API Caffe's layers were written for
    assert command.resolve_cudnn("auto", "90", str(cuda_home)) == ("", "")
    write_cudnn_headers(cuda_home / "include", major=9)
    found = ("9.14.0", str(cuda_home / "include"))
    assert command.resolve_cudnn("auto", "90", str(cuda_home)) == found
    assert command.resolve_cudnn("yes", "90", str(cuda_home)) == found
    assert command.resolve_cudnn("no", "90", str(cuda_home)) == ("", "")
    assert command.resolve_cudnn("auto", "", str(cuda_home)) == ("", "")


def test_cudnn_build_compiles_and_links_cudnn(tmp_path):
    target = recipe.Target(cuda_arch="90", cudnn_include="/opt/cudnn/include", jobs=1)
    jobs = recipe._compile_jobs(str(tmp_path), str(tmp_path / "obj"), target, "9.0.2")
    plain = recipe._compile_jobs(str(tmp_path), str(tmp_path / "obj"),
                                 recipe.Target(cuda_arch="90", jobs=1), "9.0.2")
    assert all({"-DUSE_CUDNN", "-I/opt/cudnn/include"} <= set(job.command) for job in jobs)
    assert not any("-DUSE_CUDNN" in job.command for job in plain)
    assert not recipe.Target(cudnn_include="/opt/cudnn/include").cudnn  # CPU builds: never


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sparknet_ml.cli", *args],
                          capture_output=True, text=True)


def test_cli_help_and_one_line_errors(tmp_path):
    done = run_cli("build-caffe", "--help")
    assert done.returncode == 0 and "--cuda-arch" in done.stdout and "--portable" in done.stdout
    done = run_cli("build-caffe", "--skip-system-deps", "--source", str(tmp_path / "no.tar.gz"))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("build-caffe: error: --source")
    assert "no.tar.gz" in done.stderr and "Traceback" not in done.stderr


def test_python_dash_m_entry_point_matches_the_cli():
    done = subprocess.run([sys.executable, "-m", "sparknet_ml.build", "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "--skip-system-deps" in done.stdout


def test_dpkg_reports_installed_and_missing_packages():
    assert deps.missing_packages(("dpkg", "no-such-package-sparknet")) == ["no-such-package-sparknet"]


def test_missing_packages_without_root_are_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(deps.MissingPackagesError) as err:
        deps.ensure_packages(("dpkg", "no-such-package-sparknet"))
    assert "missing Debian packages: no-such-package-sparknet" in str(err.value)
    assert "apt-get install -y --no-install-recommends no-such-package-sparknet" in str(err.value)


def test_library_check_searches_like_the_linker(monkeypatch, tmp_path):
    deps.check_library("c", "libc is always there")
    with pytest.raises(deps.MissingPackagesError, match="libsparknet_nothing.so not found: get it"):
        deps.check_library("sparknet_nothing", "get it")
    (tmp_path / "libsparknet_nothing.so").write_text("")
    monkeypatch.setenv("LIBRARY_PATH", str(tmp_path))
    deps.check_library("sparknet_nothing", "found through LIBRARY_PATH")
