"""Shared test fixtures: a small synthetic corpus (real H.264 files, fake content) for every area."""

from __future__ import annotations

import os

import pytest

# Nothing in the test suite may reach the network; transformers/hub must use local files only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from synthetic.corpus import CorpusManifest, generate  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusManifest:
    """3 videos x 3 clips (320x240, 30 fps, ~11 s, GOP 250, B-frames) + a 4/2/2 MSR-VTT-format set.

    Read-only for tests: copy what you need to modify. Truth: ``synthetic_corpus.load_truth()``.
    """
    return generate(
        tmp_path_factory.mktemp("corpus"), videos=3, clips_per_video=3, seed=0, downstream_videos=(4, 2, 2)
    )


@pytest.fixture(scope="session")
def synthetic_edge_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusManifest:
    """2 videos x 2 clips: video 0 has variable frame durations (VFR) and an AAC track as stream 0
    (video is stream 1), video 1 a 90-degree display matrix (coded 240x320, displayed 320x240)."""
    return generate(
        tmp_path_factory.mktemp("edge_corpus"),
        videos=2,
        clips_per_video=2,
        seed=1,
        vfr_videos=1,
        rotated_videos=1,
        audio_videos=1,
        downstream_videos=(0, 0, 0),
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (use via `pytestmark = pytest.mark.usefixtures("one_torch_thread")`).

    Tiny ops are dominated by thread hand-off on a busy 2-core machine; one thread is faster and
    deterministic. The previous count is restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
