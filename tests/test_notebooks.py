"""The notebooks run top to bottom at small sizes (SCORESDE_NOTEBOOK_SMALL=1) and are committed without outputs."""
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_new_sde.ipynb", "02_comparing_solvers.ipynb", "03_likelihoods.ipynb", "04_digits.ipynb",
            "05_conditional.ipynb", "06_inverse_problems.ipynb", "07_pretrained_models.ipynb"]


def test_all_notebooks_present():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs: strip them"
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'os.environ.get("SCORESDE_NOTEBOOK_SMALL") == "1"' in sources


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
    # The kernel inherits this process's environment: small sizes, a non-interactive matplotlib backend, and
    # one thread per process (these problems are tiny, and several test processes may share the cores).
    monkeypatch.setenv("SCORESDE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    # Kernel "python3": jupyter_client starts it with this interpreter (sys.executable), i.e. the project's venv.
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
