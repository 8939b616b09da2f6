"""Every notebook of examples/notebooks/ executes end to end, cell by cell, in a Jupyter
kernel (nbclient + ipykernel); any cell error fails the test.

The notebooks are jupytext percent-format ``.py`` files (diffable, no outputs in git);
jupytext turns each into a notebook, and nbclient runs it in a kernel started with *this*
Python (a kernelspec written to a temporary JUPYTER_PATH), so the kernel imports the genppl
under test. Each notebook runs the bundled model for 15-45 s on a shared 2-core CPU (kernel
start, imports, compilation; 3 min 17 s for all seven at load average 4.5, 7 min 41 s at load
average 9), so they are in the slow suite; the default suite only checks that every notebook parses and that the gallery
lists them all.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "examples" / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))


def kernel_env(tmp_path) -> str:
    """A kernelspec running this interpreter, found first on JUPYTER_PATH; returns its name."""
    spec = tmp_path / "jupyter" / "kernels" / "genppl-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "genppl test", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH", "")])
    return "genppl-test"


def execute(name: str, tmp_path, timeout: int = 300):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name=kernel_env(tmp_path),
                                     resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell on any error
    return notebook, time.perf_counter() - started


def test_every_notebook_parses_and_is_listed():
    jupytext = pytest.importorskip("jupytext")
    readme = (NOTEBOOKS / "README.md").read_text()
    assert len(NAMES) == 7
    for name in NAMES:
        notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
        kinds = {c.cell_type for c in notebook.cells}
        assert kinds == {"markdown", "code"}, name
        assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), name
        assert f"{name}.py" in readme, f"{name}.py is missing from examples/notebooks/README.md"


# slow: each notebook runs the bundled model end to end in a fresh kernel (20-60 s each)
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, tmp_path):
    notebook, seconds = execute(name, tmp_path)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the rich displays were produced: an HTML table or a PNG figure somewhere
    assert any("text/html" in o.get("data", {}) or "image/png" in o.get("data", {}) for o in outputs)
    # the 2-minute budget holds on an idle 2-core machine; on a machine shared with other jobs
    # (load above the core count) the time is reported, not judged
    if os.getloadavg()[0] <= (os.cpu_count() or 1):
        assert seconds < 120, f"{name} took {seconds:.0f}s; a notebook must run in under 2 minutes"
    print(f"{name}: {seconds:.1f} s (load average {os.getloadavg()[0]:.1f})")
