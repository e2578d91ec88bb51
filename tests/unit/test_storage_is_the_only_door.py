"""Cluster-storage issue, "done when": every path the package reads or writes goes through
sparknet_ml.storage. The modules that call Python's file functions are listed from their
syntax trees; outside storage only these may, each for files the package itself owns."""
import ast
import pathlib

import sparknet_ml

PACKAGE = pathlib.Path(sparknet_ml.__file__).parent

FILE_CALLS = {"open", "os.makedirs", "os.replace", "os.rename", "os.remove", "os.unlink",
              "os.listdir", "os.rmdir", "os.fdopen", "io.open", "gzip.open",
              "shutil.rmtree", "shutil.copy", "shutil.copyfile", "shutil.copytree",
              "shutil.move"}

NOT_USER_FILES = {
    "storage.py": "the door itself",
    "build/cache.py": "the pycaffe wheel cache (~/.cache/sparknet_ml)",
    "build/source.py": "the pinned Caffe sdist, unpacked in a build folder",
    "build/patches.py": "patching that build folder",
    "build/recipe.py": "compiling in that build folder",
    "build/wheel.py": "the wheel, a local file pip installs",
    "build/command.py": "the build's record of what was installed",
    "engine/solver.py": "Caffe's prototxt, handed over in an unlinked temporary file",
    "tasks/blocks.py": "a task's spill files in Spark's local directory",
    "tasks/environment.py": "/proc/self/fd",
    "tasks/states.py": "weights Spark shipped to the executor (SparkFiles)",
    "driver/exchange.py": "weights in a temporary file, to be shipped to the executors",
    "persistence/onnx_file.py": "a model over 2 GiB and its external data, in a temporary "
                                "folder before storage writes them",
    "data/fashion_mnist.py": "the files of Debian's dataset-fashion-mnist",
    "zoo/__init__.py": "the prototxts shipped in the package",
    "cli.py": "bench: the benchmarks folder of a source checkout",
}


def _name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


def modules_calling_file_functions() -> dict[str, set[str]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        calls = {_name(node) for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call)} & FILE_CALLS
        if calls:
            found[path.relative_to(PACKAGE).as_posix()] = calls
    return found


def test_only_storage_opens_renames_or_deletes_files_the_user_named():
    found = modules_calling_file_functions()
    assert sorted(found) == sorted(NOT_USER_FILES), {
        module: calls for module, calls in found.items() if module not in NOT_USER_FILES}


def test_the_scan_sees_the_calls_it_looks_for():
    assert modules_calling_file_functions()["storage.py"] >= {"open", "os.makedirs",
                                                              "os.rename", "os.remove",
                                                              "shutil.rmtree", "os.listdir"}
