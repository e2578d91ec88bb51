"""Build pycaffe from Caffe's pinned sdist with our own recipe, patches and wheel cache.

Run it as ``sparknet-ml build-caffe`` or ``python -m sparknet_ml.build``; see
``docs/caffe-build.md``.
"""
