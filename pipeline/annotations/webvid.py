"""WebVid `results_*.csv`: `videoid,name,page_idx,page_dir,duration,contentUrl`; `name` is the caption."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.annotations.records import Annotations
from pipeline.annotations.textfile import headed_csv

WEBVID_TEXT_COLUMN = "name"
_DURATION_RE = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def iso_duration(text: str) -> float | None:
    """`PT00H00M17S` -> 17.0; None when not an ISO-8601 duration."""
    m = _DURATION_RE.match(text.strip())
    if m is None or not any(m.groups()):
        return None
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def read_webvid_csv(
    path: Path, fmt: str = "webvid_csv", column: str = WEBVID_TEXT_COLUMN, delimiter: str | None = None
) -> Annotations:
    """One record per row: id `videoid`, the caption, times [0, duration] when the duration parses."""
    header, rows = headed_csv(
        path, f"{fmt} expects a csv (header videoid,name,...,duration,contentUrl)", (column,), delimiter
    )
    tcol = header.index(column)
    vcol = header.index("videoid") if "videoid" in header else None
    dcol = header.index("duration") if "duration" in header else None
    out = Annotations(path, fmt)
    for n, row in rows:
        if len(row) <= tcol:
            out.problem(f"line {n}: {len(row)} field(s), no {column!r}", counted=False)
            continue
        dur = iso_duration(row[dcol]) if dcol is not None and len(row) > dcol else None
        vid = row[vcol].strip() if vcol is not None and len(row) > vcol else ""
        out.add(vid, row[tcol], f"line {n}", start=0.0 if dur is not None else None, end=dur)
    return out
