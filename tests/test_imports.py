"""The models import without torchgeo (a bare GPU box runs them from plain PyTorch)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torchgeo':
            raise ImportError('torchgeo is blocked in this test')
sys.meta_path.insert(0, Block())
import zoo.models, zoo.data.tokenize, zoo.data.embedded, zoo.data.batch, zoo.io
assert not [m for m in sys.modules if m.startswith('torchgeo')]
"""


def test_models_import_without_torchgeo():
    subprocess.run([sys.executable, "-c", CODE], check=True, timeout=120)
