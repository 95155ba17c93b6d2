"""Dense-caption json of ActivityNet Captions and YouCook2 (`train.json`, `val_1.json`, `val_2.json`):
`{"v_<id>": {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}`, and the paragraph list form."""

from __future__ import annotations

from pathlib import Path

from pipeline.annotations.captionlist import LIST_FORM, is_caption_list, read_caption_list
from pipeline.annotations.records import AnnotationError, Annotations, video_key
from pipeline.annotations.textfile import describe, parse_json


def _span(ts: object) -> tuple[float | None, float | None]:
    ok = isinstance(ts, list) and len(ts) == 2 and all(isinstance(x, int | float) for x in ts)
    return (float(ts[0]), float(ts[1])) if ok else (None, None)  # type: ignore[index]


def read_dense_json(path: Path, fmt: str = "activitynet_json", ids: list[str] | None = None) -> Annotations:
    """One record per sentence with its timestamps (seconds), videos in file order or in `ids` order
    (the `train_ids.json` / `val_ids.json` lists)."""
    expected = (
        f'{fmt} expects a dense-caption json ({{"v_<id>": {{"timestamps": [...], "sentences": [...]}}}}) '
        f"or {LIST_FORM}"
    )
    doc = parse_json(path, expected)
    if is_caption_list(doc):
        out = read_caption_list(doc, path, fmt, expected)
        if ids is not None:
            keep = set(ids)
            out.records = [r for r in out.records if r.video_id in keep]
        return out
    if not isinstance(doc, dict) or not any(
        isinstance(v, dict) and "sentences" in v for v in list(doc.values())[:50]
    ):
        raise AnnotationError(path, expected, describe(doc))
    out = Annotations(path, fmt)
    keys = list(doc) if ids is None else [k for k in ids if k in doc]
    for k in keys:
        rec = doc[k]
        sents = rec.get("sentences") if isinstance(rec, dict) else None
        if not isinstance(sents, list):
            out.problem(f"{k}: no 'sentences' list", counted=False)
            continue
        if not sents:
            out.rows += 1
            out.empty += 1  # a video without sentences: nothing to retrieve it by
            continue
        stamps = rec.get("timestamps")
        stamps = stamps if isinstance(stamps, list) and len(stamps) == len(sents) else [None] * len(sents)
        for j, (s, ts) in enumerate(zip(sents, stamps, strict=True)):
            start, end = _span(ts)
            out.add(video_key(k), s, f"{k}[{j}]", split=rec.get("subset"), start=start, end=end)
    return out


def read_id_json(path: Path, fmt: str = "activitynet_ids") -> list[str]:
    """`train_ids.json` / `val_ids.json`: a json list of video ids."""
    doc = parse_json(path, f"{fmt} expects a json list of video ids")
    if not isinstance(doc, list) or not all(isinstance(x, str) for x in doc):
        raise AnnotationError(path, f"{fmt} expects a json list of video ids", describe(doc))
    return list(doc)
