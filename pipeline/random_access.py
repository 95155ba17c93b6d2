"""Is a container keyframe a clean random-access point? (H.264 and HEVC bitstream check.)

Containers mark "sync samples" that a decode cannot always start from: an H.264 I-frame that is not an
IDR and carries no recovery point, a periodic-intra-refresh frame (its picture is complete only some
frames later), or a P-frame a remuxer flagged by mistake. A decode started there conceals missing
references, and FFmpeg does not flag every such frame as corrupt. So the decoder seeks only to
keyframes this module calls clean, and steps back further otherwise (docs/PIPELINE.md, "Invariant").

Clean: an H.264 IDR, or a non-IDR picture with a recovery point SEI whose recovery_frame_cnt is 0
(x264's open-GOP I-frames); an HEVC IRAP (IDR, CRA, BLA). Leading pictures of an open GOP (shown
before the keyframe) are never taken from a decode started at that keyframe (see pyav_reader).
Other codecs' keyframes are trusted here; the decode-time checks (errors, corrupt frames, missing
output) remain the safety net for them.
"""

from __future__ import annotations

from collections.abc import Iterator

_H264 = {"h264"}
_HEVC = {"hevc", "h265"}
_H264_IDR, _H264_SEI, _H264_RECOVERY_POINT = 5, 6, 6
_HEVC_IRAP = range(16, 22)
_HEVC_IDR = (19, 20)


def _nal_units(data: bytes, length_size: int) -> Iterator[bytes]:
    """NAL units of one packet: length-prefixed (mp4/mkv, length_size > 0) or Annex B start codes."""
    if length_size > 0:
        i = 0
        while i + length_size <= len(data):
            n = int.from_bytes(data[i : i + length_size], "big")
            i += length_size
            if n <= 0 or i + n > len(data):
                return
            yield data[i : i + n]
            i += n
        return
    for chunk in data.split(b"\x00\x00\x01"):
        chunk = chunk.rstrip(b"\x00")
        if chunk:
            yield chunk


def _length_size(codec: str, extradata: bytes | None) -> int:
    """NAL length prefix size from avcC/hvcC extradata; 0 for Annex B (no or start-code extradata)."""
    if not extradata or extradata[0] != 1:
        return 0
    if codec in _H264 and len(extradata) > 4:
        return (extradata[4] & 3) + 1
    if codec in _HEVC and len(extradata) > 21:
        return (extradata[21] & 3) + 1
    return 0


def _unescape(rbsp: bytes) -> bytes:
    return rbsp.replace(b"\x00\x00\x03", b"\x00\x00")


def _read_ue(data: bytes) -> int | None:
    """The first Exp-Golomb ue(v) value of data."""
    bits = "".join(f"{b:08b}" for b in data[:8])
    zeros = len(bits) - len(bits.lstrip("0"))
    if 2 * zeros + 1 > len(bits):
        return None
    return int(bits[zeros : 2 * zeros + 1], 2) - 1


def _recovery_frame_count(sei: bytes) -> int | None:
    """recovery_frame_cnt of the recovery point message in an H.264 SEI NAL (None: no such message)."""
    data = _unescape(sei[1:])
    i = 0
    while i < len(data) and data[i] != 0x80:  # 0x80: rbsp trailing bits
        kind = size = 0
        while i < len(data) and data[i] == 0xFF:
            kind, i = kind + 255, i + 1
        if i >= len(data):
            return None
        kind, i = kind + data[i], i + 1
        while i < len(data) and data[i] == 0xFF:
            size, i = size + 255, i + 1
        if i >= len(data):
            return None
        size, i = size + data[i], i + 1
        if kind == _H264_RECOVERY_POINT:
            return _read_ue(data[i : i + size])
        i += size
    return None


def is_clean_random_access(codec: str, extradata: bytes | None, packet: bytes, open_gop: bool = True) -> bool:
    """True when a decode may start at this keyframe packet (see the module docstring). With
    open_gop=False only an IDR qualifies (no leading pictures that reference an earlier GOP)."""
    if codec not in _H264 and codec not in _HEVC:
        return True
    length_size = _length_size(codec, extradata)
    recovery_ok = False
    for nal in _nal_units(packet, length_size):
        if codec in _HEVC:
            kind = (nal[0] >> 1) & 0x3F
            if kind in _HEVC_IRAP:
                return open_gop or kind in _HEVC_IDR
            continue
        kind = nal[0] & 0x1F
        if kind == _H264_IDR:
            return True
        if kind == _H264_SEI and _recovery_frame_count(nal) == 0:
            recovery_ok = True
    return recovery_ok and open_gop
