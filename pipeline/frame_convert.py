"""Decoded picture -> stored RGB: colour conversion, orientation, display aspect, resizes, K.mp4.

Colour is converted at full resolution, exactly as a full-resolution `ffmpeg -pix_fmt rgb24` decode does
(FFmpeg's unscaled YUV -> RGB path, which honours the frame's matrix, BT.601/BT.709/..., and range,
limited/full), and only then resized with the documented PIL bicubic (docs/PIPELINE.md, "Colour").
Scaling and converting in one swscale call, as before, is ~1 level darker and turns white into 253.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """H x W x 3 uint8 RGB at the coded size, using the frame's colour matrix and range (no scaling, so
    swscale takes its unscaled conversion path, the one `ffmpeg -pix_fmt rgb24` uses)."""
    return frame.to_ndarray(format="rgb24")


def rotate(a: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees, as FFmpeg's autorotate reads it)."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(a, k)) if k else a


def display_size(width: int, height: int, sar: Fraction | None, rotation: int) -> tuple[int, int]:
    """(w, h) on screen: the sample aspect ratio stretches the width (as FFmpeg), then rotation."""
    w = max(1, round(width * sar)) if sar and sar > 0 and sar != 1 else width
    return (height, w) if round(rotation / 90) % 2 == 1 else (w, height)


def video_size(display_w: int, display_h: int, short: int) -> tuple[int, int]:
    """(w, h) with the display aspect and short side == short, both even (libx264 yuv420p)."""
    scale = short / min(display_w, display_h)
    return max(2, round(display_w * scale / 2) * 2), max(2, round(display_h * scale / 2) * 2)


def resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL bicubic resize of an RGB array (the documented resize of every stored frame)."""
    if a.shape[0] == height and a.shape[1] == width:
        return a
    return np.asarray(Image.fromarray(a).resize((width, height), Image.Resampling.BICUBIC))


def squash(a: np.ndarray, size: int) -> np.ndarray:
    """Resize RGB to size x size ignoring aspect (CLIP-ViP's squash), bicubic."""
    return resize(a, size, size)


# libx264's macroblock-tree rate control reads heap memory it never wrote on its AVX-512 path, so with it
# the same frames gave different bytes depending on what the process had allocated before (seen as
# MALLOC_PERTURB_ changing the output, and as two extractions in one process disagreeing). Without it
# the output depends on the frames only; it costs ~20% more bytes at the same crf and PSNR.
CLIP_VIDEO_X264_PARAMS = "mbtree=0"


def encode_clip_video(frames: list[np.ndarray], fps: float) -> bytes:
    """Encode display-orientation RGB frames as H.264 mp4 at `fps` (the --store-video K.mp4); the same
    frames give the same bytes (see CLIP_VIDEO_X264_PARAMS)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {
            "crf": "23",
            "preset": "veryfast",
            "x264-params": CLIP_VIDEO_X264_PARAMS,
        }
        for i, a in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(a, format="rgb24")
            vf.pts = i
            for p in stream.encode(vf):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return buf.getvalue()
