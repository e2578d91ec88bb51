"""build-caffe's command line, CUDA resolution and system-package check (no compiling)."""
import os
import subprocess
import sys

import pytest

from sparknet_ml.build import command, deps
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
