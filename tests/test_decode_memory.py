"""Output-order files (AVI) are decoded from the start in streaming passes: a worker's memory does not
grow with the file (it once held every packet: a 1 GB AVI took 1 GB of RAM)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

_PEAK = """
import resource, sys
from pathlib import Path
from pipeline.decode import FrameSpec, decode_video_clips
from pipeline.metadata import ClipRow
rows = [ClipRow(0, "big.1", "big", 9.0, 11.0, "m")]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
(r,) = decode_video_clips(Path(sys.argv[1]), rows, FrameSpec(frames=2))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(r.status, r.time_source, before * 1024, after * 1024)
"""


def _big_avi(path: Path, frames: int) -> None:
    """mpeg4 with B-frames in AVI (decode-order timestamps), noise at qscale 2: ~0.5 MB a frame."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        s.codec_context.options = {"bf": "2", "qscale": "2"}
        s.codec_context.qmax = 2
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))


def test_output_order_decode_does_not_hold_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.avi"
    _big_avi(path, 420)  # 14 s
    size = path.stat().st_size
    assert size > 150 * 2**20
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    status, source, before, after = out[0], out[1], int(out[2]), int(out[3])
    assert (status, source) == ("ok", "output_order")
    assert after - before < size / 4, (
        f"peak memory grew {(after - before) / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    )
