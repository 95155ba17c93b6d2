"""MSR-VTT: the 1k-A JSFusion csv, the 9k/7k training id lists, `MSRVTT_data.json`, and the list form."""

from __future__ import annotations

from pathlib import Path

from pipeline.annotations.captionlist import LIST_FORM, is_caption_list, read_caption_list
from pipeline.annotations.records import AnnotationError, Annotations, video_key
from pipeline.annotations.textfile import describe, headed_csv, parse_json

JSFUSION_TEXT_COLUMN = "sentence"
ID_COLUMN = "video_id"


def read_msrvtt_csv(
    path: Path, fmt: str = "msrvtt_csv", column: str = JSFUSION_TEXT_COLUMN, delimiter: str | None = None
) -> Annotations:
    """`MSRVTT_JSFUSION_test.csv` (`key,vid_key,video_id,sentence`, `,` or `;`): one record per row.
    A copy without a `video_id` column gives records with an empty video id (texts only)."""
    header, rows = headed_csv(
        path, f"{fmt} expects a csv (header key,vid_key,video_id,sentence)", (column,), delimiter
    )
    tcol, vcol = header.index(column), header.index(ID_COLUMN) if ID_COLUMN in header else None
    out = Annotations(path, fmt)
    for n, row in rows:
        if len(row) <= tcol or (vcol is not None and len(row) <= vcol):
            out.problem(f"line {n}: {len(row)} field(s), no {column!r}", counted=False)
            continue
        out.add(video_key(row[vcol]) if vcol is not None else "", row[tcol], f"line {n}")
    return out


def read_msrvtt_ids(path: Path, fmt: str = "msrvtt_ids", delimiter: str | None = None) -> list[str]:
    """`MSRVTT_train.9k.csv` / `.7k.csv` (and any id list with a `video_id` column): ids in file order,
    duplicates dropped."""
    header, rows = headed_csv(path, f"{fmt} expects a csv id list (header video_id)", (ID_COLUMN,), delimiter)
    col = header.index(ID_COLUMN)
    return list(dict.fromkeys(video_key(r[col]) for _, r in rows if len(r) > col and r[col].strip()))


def read_msrvtt_json(path: Path, fmt: str = "msrvtt_json", split: str | None = None) -> Annotations:
    """`MSRVTT_data.json` (`{"videos": [{video_id, split}], "sentences": [{video_id, caption}]}`): one
    record per sentence with its video's split (option `split` keeps one split), or the list form."""
    expected = f'{fmt} expects MSRVTT_data.json ({{"videos": [...], "sentences": [...]}}) or {LIST_FORM}'
    doc = parse_json(path, expected)
    if is_caption_list(doc):
        if split:
            raise AnnotationError(path, f"{fmt} option split needs MSRVTT_data.json", "a retrieval list")
        return read_caption_list(doc, path, fmt, expected)
    if not isinstance(doc, dict) or not isinstance(doc.get("sentences"), list):
        raise AnnotationError(path, expected + " with a 'sentences' list", describe(doc))
    videos = doc["videos"] if isinstance(doc.get("videos"), list) else []
    split_of = {
        str(v.get("video_id")): v.get("split") for v in videos if isinstance(v, dict) and "video_id" in v
    }
    if split and split not in split_of.values():
        found = sorted({str(s) for s in split_of.values()})
        raise AnnotationError(
            path, f"{fmt} option split={split!r}", f"no such video (splits present: {found})"
        )
    out = Annotations(path, fmt)
    for i, s in enumerate(doc["sentences"]):
        vid = s.get("video_id") if isinstance(s, dict) else None
        if vid is None:
            out.problem(f"sentence {i}: no video_id", counted=False)
            continue
        vsplit = split_of.get(str(vid))
        if split and vsplit != split:
            continue
        out.add(video_key(str(vid)), s.get("caption"), f"sentence {i}", split=vsplit)
    return out
