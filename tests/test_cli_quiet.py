"""--no-progress silences libraries too: transformers' "Loading weights" bar (after
pipeline.cli.quiet_library_progress) and faiss's failed-AVX512-import line (analysis.clustering)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_checks import REPO, cli_env
from tiny_hf_clip import random_hf_clip

LOAD = """
import sys
from transformers import CLIPModel
if sys.argv[2] == "quiet":
    from pipeline.cli import quiet_library_progress
    quiet_library_progress()
CLIPModel.from_pretrained(sys.argv[1])
"""


def _stderr(code: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_quiet_library_progress_hides_the_loading_bar(tmp_path: Path) -> None:
    text = dict(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16)  # fmt: skip
    random_hf_clip(text, vision, projection_dim=8).save_pretrained(tmp_path)
    assert "Loading weights" in _stderr(LOAD, str(tmp_path), "loud")  # the bar this test is about
    assert "Loading weights" not in _stderr(LOAD, str(tmp_path), "quiet")


def test_faiss_import_noise_is_filtered() -> None:
    code = (
        "import logging, numpy as np; logging.basicConfig(level=logging.DEBUG)\n"
        "from analysis.clustering import kmeans_labels\n"
        "x = np.random.default_rng(0).standard_normal((64, 8)).astype('float32')\n"
        "x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
        "print(kmeans_labels(x, 0).shape)"
    )
    err = _stderr(code)
    assert "ModuleNotFoundError" not in err and "Could not load library" not in err, err[-2000:]
