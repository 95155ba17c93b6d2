"""DiDeMo (LocalizingMoments): the original `{train,val,test}_data.json` with `times`, and the
paragraph-retrieval list form.

The same Flickr video appears in the original files under two names that differ in extension and
share one `dl_link`; it is one video here (one id, its descriptions in file order)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline.annotations.captionlist import LIST_FORM, is_caption_list, read_caption_list
from pipeline.annotations.records import AnnotationError, Annotations, video_key
from pipeline.annotations.textfile import describe, parse_json

SEGMENT_SECONDS = 5.0  # DiDeMo's `times` index 5-second segments


def moment(times: object) -> tuple[float, float] | None:
    """The most voted `[first, last]` segment pair as seconds (ties: the first voted), or None."""
    if not isinstance(times, list):
        return None
    votes = [
        tuple(t) for t in times if isinstance(t, list) and len(t) == 2 and all(isinstance(x, int) for x in t)
    ]
    if not votes:
        return None
    first, last = Counter(votes).most_common(1)[0][0]
    return first * SEGMENT_SECONDS, (last + 1) * SEGMENT_SECONDS


def read_didemo_json(path: Path, fmt: str = "didemo_json") -> Annotations:
    """One record per description (or per caption of the list form), duplicates under two names merged."""
    expected = f"{fmt} expects a JSON list of annotation objects ({{video, description, times, dl_link}}) or {LIST_FORM}"
    doc = parse_json(path, expected)
    if not isinstance(doc, list) or (doc and not isinstance(doc[0], dict)):
        raise AnnotationError(path, expected, describe(doc))
    if is_caption_list(doc) and not any(isinstance(d, dict) and "description" in d for d in doc[:50]):
        return read_caption_list(doc, path, fmt, expected)
    if doc and not any(isinstance(d, dict) and "description" in d for d in doc[:50]):
        raise AnnotationError(path, expected, describe(doc))
    out = Annotations(path, fmt)
    by_link: dict[str, str] = {}  # dl_link -> the id of the first name seen with it
    merged: set[str] = set()
    for i, d in enumerate(doc):
        name = d.get("video") if isinstance(d, dict) else None
        if not isinstance(name, str) or not name.strip():
            out.problem(f"record {i}: no 'video' name", counted=False)
            continue
        vid = video_key(name)
        link = d.get("dl_link")
        if isinstance(link, str) and link:
            first = by_link.setdefault(link, vid)
            if first != vid:
                merged.add(vid)
                vid = first
        span = moment(d.get("times"))
        out.add(
            vid,
            d.get("description"),
            f"record {i}",
            start=span[0] if span else None,
            end=span[1] if span else None,
        )
    if merged:
        out.notes.append(f"{len(merged)} video name(s) share a dl_link with an earlier name: merged into it")
    return out
