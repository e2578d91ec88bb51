"""The notebooks under notebooks/: each runs top to bottom in a fresh kernel (their cells
assert on the results), and each is committed valid and without outputs."""
import os
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # per cell; a whole notebook takes 1-1.5 min on 2 busy cores


def test_the_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01-quickstart.ipynb",
                                           "02-pipeline-and-crossvalidation.ipynb",
                                           "03-caffe-model-zoo-style.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_and_stripped(path):
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution_count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    pytest.importorskip("caffe")
    nbclient = pytest.importorskip("nbclient")
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    # The kernel inherits this environment (tests/conftest.py sets both by default): Spark
    # binds to loopback, glog keeps Caffe's INFO lines out of the cells.
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("GLOG_minloglevel", "2")
    # "python3" is ipykernel's own spec: jupyter_client runs it with this interpreter.
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    failure = None
    try:
        client.execute(env=env)
    except CellExecutionError as error:  # the failing cell's source and traceback
        failure = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # no terminal colours
    if failure is not None:
        pytest.fail(f"{path.name} failed:\n{failure}", pytrace=False)
