"""Spark's Python daemon for workers without pycaffe: in every Python worker forked from it,
``import caffe`` fails as it does where pycaffe is not installed.

no_caffe_job.py installs it with ``spark.python.daemon.module=no_caffe_daemon`` (this folder
on the workers' ``PYTHONPATH``).
"""
import importlib.abc
import sys

from pyspark import daemon


class NoCaffe(importlib.abc.MetaPathFinder):
    """Finds ``caffe`` and its submodules nowhere."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "caffe":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, NoCaffe())
    daemon.manager()
