"""genppl imports without matplotlib; a figure then says what to install."""

import subprocess
import sys

CODE = """
import sys
sys.modules["matplotlib"] = None          # as if matplotlib were not installed
from genppl import viz
assert "matplotlib" not in [m for m in sys.modules if sys.modules[m] is not None]
try:
    viz.figures.training_curves([{"step": 1, "loss": 1.0}])
except ImportError as err:
    assert "pip install matplotlib" in str(err), err
else:
    raise AssertionError("no ImportError")
html = viz.History([{"step": 1, "loss": 1.0}])._repr_html_()
assert "install matplotlib" in html
print("ok")
"""


def test_viz_imports_without_matplotlib():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
