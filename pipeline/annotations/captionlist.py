"""The retrieval list json several repos publish for MSR-VTT, DiDeMo, LSMDC and ActivityNet:
`[{"video": "video9001.mp4", "caption": "..." | ["...", "..."]}, ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.annotations.records import AnnotationError, Annotations, video_key
from pipeline.annotations.textfile import describe

LIST_FORM = 'a list of {"video", "caption": str | [str]}'


def is_caption_list(doc: Any) -> bool:
    return isinstance(doc, list) and any(isinstance(d, dict) and "caption" in d for d in doc[:50])


def read_caption_list(
    doc: Any, path: Path, fmt: str, expected: str, out: Annotations | None = None
) -> Annotations:
    """Records of a parsed list-form json: one per caption, the video id from `video` (or `video_id`)."""
    if not is_caption_list(doc):
        raise AnnotationError(path, expected, describe(doc))
    out = out if out is not None else Annotations(path, fmt)
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            out.problem(f"record {i}: not an object", counted=False)
            continue
        name = item.get("video", item.get("video_id"))
        if not isinstance(name, str) or not name.strip():
            out.problem(f"record {i}: no 'video' name", counted=False)
            continue
        value = item.get("caption")
        for j, t in enumerate(value if isinstance(value, list) else [value]):
            out.add(video_key(name), t, f"record {i}[{j}]" if isinstance(value, list) else f"record {i}")
    return out
