"""DESIGN.md's layout: the engine is pure Caffe + numpy (arrows point from the stages to the
engine, never back), so executors and the GPU machine, which has no pyspark, run it alone. Its
imports are read from the syntax trees, function-level imports included."""
import ast
import pathlib

import sparknet_ml

ENGINE = pathlib.Path(sparknet_ml.__file__).parent / "engine"

REACHABLE = {"sparknet_ml.engine", "sparknet_ml.build"}
"""What the engine may import from the package: itself, and the build's record of the
installed pycaffe (``engine/devices.py`` reports it)."""


def engine_imports() -> dict[str, set[str]]:
    """Every module each engine module imports, as absolute names."""
    found = {}
    for path in sorted(ENGINE.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = "sparknet_ml.engine".rsplit(".", node.level - 1)[0] if node.level else ""
                names.add(".".join(p for p in (base, node.module or "") if p))
        found[path.name] = names
    return found


def test_the_engine_imports_neither_spark_nor_the_layers_above_it():
    imports = engine_imports()
    assert "scoring.py" in imports and "onnx_scoring.py" in imports
    wrong = {module: sorted(name for name in names
                            if name.split(".")[0] == "pyspark"
                            or (name.startswith("sparknet_ml")
                                and not any(name == r or name.startswith(r + ".")
                                            for r in REACHABLE)))
             for module, names in imports.items()}
    assert not any(wrong.values()), {m: n for m, n in wrong.items() if n}
