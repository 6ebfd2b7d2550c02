"""`import art.report` does not load matplotlib (figures import it when drawing)."""

import subprocess
import sys


def test_import_report_is_light():
    code = "import sys, art.report; print(','.join(m for m in ('matplotlib', 'torch', 'cvxpy', 'SimpleITK') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
