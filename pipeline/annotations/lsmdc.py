"""LSMDC 2016 (1k test and training): the tab-separated file without header
(`clip_id, start, end, start, end, sentence`) and the json list form."""

from __future__ import annotations

from pathlib import Path

from pipeline.annotations.captionlist import LIST_FORM, read_caption_list
from pipeline.annotations.records import AnnotationError, Annotations, video_key
from pipeline.annotations.textfile import delimited_rows, parse_json

LSMDC_FIELDS = 6


def read_lsmdc_tsv(path: Path, fmt: str = "lsmdc_tsv") -> Annotations:
    """One record per line: the clip id (files live at `<movie>/<clip_id>.avi`) and the sentence; the
    clip's own times are in its id, so `start`/`end` stay None (the clip file is the whole span)."""
    out = Annotations(path, fmt)
    expected = f"{fmt} expects tab-separated clip_id, 4 timestamps, sentence (no header)"
    for n, row in delimited_rows(path, expected, "\t"):
        if len(row) < 2 or not row[0].strip():
            out.problem(f"line {n}: {len(row)} field(s), expected {LSMDC_FIELDS}", counted=False)
            continue
        out.add(video_key(row[0]), row[-1], f"line {n}")
    if out.rows and out.malformed == out.rows:
        raise AnnotationError(path, expected, f"no line with tabs ({'; '.join(out.problems[:2])})")
    return out


def read_lsmdc_json(path: Path, fmt: str = "lsmdc_json") -> Annotations:
    expected = f"{fmt} expects {LIST_FORM}"
    return read_caption_list(parse_json(path, expected), path, fmt, expected)
