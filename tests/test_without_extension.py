"""Without the compiled extension the package imports, says so once with the reason, and runs
on the reference backend (checked in a subprocess with the extension disabled)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import torch
    import fastsmooth
    from fastsmooth import ops
    x = torch.rand(2, 1, 4, 5)
    out = ops.ablate_bands(x, 2)
    ops.encode(x)
messages = [str(w.message) for w in caught if issubclass(w.category, fastsmooth.FastsmoothWarning)]
assert len(messages) == 1, messages
assert "FASTSMOOTH_DISABLE_EXTENSION" in messages[0], messages[0]
info = fastsmooth.backends()
assert not info["cpu"].available and "FASTSMOOTH_DISABLE_EXTENSION" in info["cpu"].reason
assert fastsmooth._backend.resolve_backend("auto", x.device) == "reference"
assert out.shape == (10, 2, 4, 5)
try:
    ops.ablate_bands(x, 2, backend="cpu")
except RuntimeError as e:
    assert "backend='cpu' is unavailable" in str(e), e
else:
    raise AssertionError("backend='cpu' ran without the extension")
print("ok")
"""


def test_reference_fallback_warns_once():
    env = dict(os.environ, FASTSMOOTH_DISABLE_EXTENSION="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
