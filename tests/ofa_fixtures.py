"""Where the OFA captioner tests find their data: the tiny checkpoint and its golden outputs (in the repo),
and the GPT-2 BPE files (third-party data next to the clone; tests that need them skip without them).

Test modules import it as `ofa_fixtures`: tests/ has no __init__.py, so pytest puts tests/ on sys.path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "ofa"
CKPT = FIXTURES / "tiny_ofa_caption_ckpt.pt.xz"
GOLDEN = FIXTURES / "tiny_ofa_caption_golden.pt"
BPE_DIR = REPO.parent / "shared" / "ofa" / "bpe"
needs_bpe = pytest.mark.skipif(
    not all((BPE_DIR / f).is_file() for f in ("encoder.json", "vocab.bpe", "dict.txt")),
    reason=f"GPT-2 BPE files (OFA utils/BPE: encoder.json, vocab.bpe, dict.txt) not found in {BPE_DIR}",
)


def load_golden() -> dict:
    """The reference outputs that the OFA-Sys code produced for the tiny checkpoint."""
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)
