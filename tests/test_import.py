"""`import art` stays light."""

import subprocess
import sys


def test_import_art_does_not_load_heavy_modules():
    code = (
        "import sys, art, art.geometry, art.structures, art.backend, art.errors;"
        "heavy=[m for m in ('torch','SimpleITK','cupy','cvxpy','pydicom','matplotlib') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
