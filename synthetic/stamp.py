"""Frame-index stamp: a band of black/white blocks at the bottom of a frame that encodes its index.

The synthetic corpus stamps every frame with its index within its file, so any stage downstream
(decoding, seeking, resizing, JPEG storage) can be checked by reading the index back from the pixels.

Layout (all positions are fractions of the frame, so a squash resize to any size keeps them): the
bottom ``BAND_FRACTION`` of the height is split into ``ROWS`` x ``COLS`` cells, read row-major:
row 0 = [1, b0 .. b11, 0], row 1 = [0, b12 .. b23, 1], where b0..b15 is the index (MSB first) and
b16..b23 a CRC-8 of it. The four fixed corner cells and the CRC let ``read_stamp`` reject frames that
carry no stamp instead of returning a wrong number. Cells are pure black / pure white; the reader
averages the luma of each cell's central half, so blur at cell borders from resizing, chroma
subsampling or JPEG does not matter. Readable down to about 112x112 from a 320x240 frame.
"""

from __future__ import annotations

import numpy as np

BAND_FRACTION = 0.125  # of the frame height, at the bottom
ROWS = 2
COLS = 14
INDEX_BITS = 16
CRC_BITS = 8
MAX_INDEX = (1 << INDEX_BITS) - 1
# Luma below LOW reads as 0, above HIGH as 1; anything between means the cell is not a clean block.
_LOW = 96.0
_HIGH = 160.0
_MIN_BAND_ROWS = 4
_MIN_WIDTH = 2 * COLS


def band_top(height: int) -> int:
    """First pixel row of the stamp band in a frame of ``height`` rows (content should stay above)."""
    return height - max(_MIN_BAND_ROWS, round(height * BAND_FRACTION))


def _crc8(value: int) -> int:
    """CRC-8 (polynomial 0x07) of the index as two big-endian bytes."""
    crc = 0
    for byte in (value >> 8 & 0xFF, value & 0xFF):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _bits(index: int) -> list[int]:
    payload = [(index >> (INDEX_BITS - 1 - k)) & 1 for k in range(INDEX_BITS)]
    crc = _crc8(index)
    payload += [(crc >> (CRC_BITS - 1 - k)) & 1 for k in range(CRC_BITS)]
    inner = COLS - 2
    return [1, *payload[:inner], 0, 0, *payload[inner:], 1]


def _cell_bounds(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every cell, row-major."""
    top = band_top(height)
    ys = [top + round(r * (height - top) / ROWS) for r in range(ROWS + 1)]
    xs = [round(c * width / COLS) for c in range(COLS + 1)]
    return [(ys[r], ys[r + 1], xs[c], xs[c + 1]) for r in range(ROWS) for c in range(COLS)]


def _check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB frame, got shape {frame.shape} dtype {frame.dtype}")
    height, width = frame.shape[:2]
    if height - band_top(height) < _MIN_BAND_ROWS or width < _MIN_WIDTH:
        raise ValueError(f"frame {width}x{height} is too small to carry a stamp")


def draw_stamp(frame_rgb: np.ndarray, index: int) -> None:
    """Write ``index`` (0..65535) into the bottom band of ``frame_rgb`` (HxWx3 uint8), in place."""
    _check_frame(frame_rgb)
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"stamp index {index} outside 0..{MAX_INDEX}")
    height, width = frame_rgb.shape[:2]
    for bit, (y0, y1, x0, x1) in zip(_bits(index), _cell_bounds(height, width), strict=True):
        frame_rgb[y0:y1, x0:x1] = 255 if bit else 0


def read_stamp(frame_rgb: np.ndarray) -> int:
    """Read the index stamped by ``draw_stamp``; raises ValueError when the band is absent or damaged."""
    _check_frame(frame_rgb)
    height, width = frame_rgb.shape[:2]
    top = band_top(height)
    luma = frame_rgb[top:].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    # Integral image: each cell's mean is then four lookups instead of a pass over its pixels.
    integral = np.zeros((luma.shape[0] + 1, luma.shape[1] + 1), np.float64)
    integral[1:, 1:] = luma.cumsum(axis=0, dtype=np.float64).cumsum(axis=1)
    bits: list[int] = []
    for n, (y0, y1, x0, x1) in enumerate(_cell_bounds(height, width)):
        # Central half of the cell (at least one pixel): away from the blurred borders.
        y0, y1 = y0 - top, y1 - top
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        cy0, cy1 = y0 + dy, max(y1 - dy, y0 + dy + 1)
        cx0, cx1 = x0 + dx, max(x1 - dx, x0 + dx + 1)
        total = integral[cy1, cx1] - integral[cy0, cx1] - integral[cy1, cx0] + integral[cy0, cx0]
        mean = float(total) / ((cy1 - cy0) * (cx1 - cx0))
        if mean <= _LOW:
            bits.append(0)
        elif mean >= _HIGH:
            bits.append(1)
        else:
            raise ValueError(f"stamp cell {n} is neither black nor white (mean luma {mean:.0f})")
    inner = COLS - 2
    if (bits[0], bits[inner + 1], bits[inner + 2], bits[-1]) != (1, 0, 0, 1):
        raise ValueError("stamp sync cells missing: frame carries no stamp")
    payload = bits[1 : inner + 1] + bits[inner + 3 : -1]
    index = int("".join(map(str, payload[:INDEX_BITS])), 2)
    crc = int("".join(map(str, payload[INDEX_BITS:])), 2)
    if crc != _crc8(index):
        raise ValueError(f"stamp checksum mismatch (read index {index})")
    return index
