"""MSVD: `captions_msvd.json` (`{clip name: [captions]}`) and the `{train,val,test}_list.txt` splits."""

from __future__ import annotations

from pathlib import Path

from pipeline.annotations.records import AnnotationError, Annotations, video_key
from pipeline.annotations.textfile import describe, iter_lines, parse_json, starts_like_json


def read_id_list(path: Path, fmt: str = "id_list") -> list[str]:
    """One clip name per line (blank lines skipped), duplicates dropped, order kept."""
    expected = f"{fmt} expects one clip name per line"
    ids: list[str] = []
    for n, line in enumerate(iter_lines(path, expected), start=1):
        if n == 1 and starts_like_json(line):
            raise AnnotationError(path, expected, f"JSON ({line.strip()[:40]!r})")
        if line.strip():
            if len(line.split()) != 1:
                raise AnnotationError(path, expected, f"line {n} with several fields: {line[:60]!r}")
            ids.append(video_key(line.strip()))
    return list(dict.fromkeys(ids))


def read_msvd_json(path: Path, fmt: str = "msvd_json", ids: list[str] | None = None) -> Annotations:
    """One record per caption; `ids` (a split list) keeps those clips, in the list's order."""
    expected = f'{fmt} expects a json object {{"<clip name>": ["caption", ...]}}'
    doc = parse_json(path, expected)
    if not isinstance(doc, dict) or not all(isinstance(v, list) for v in list(doc.values())[:50]):
        raise AnnotationError(path, expected, describe(doc))
    out = Annotations(path, fmt)
    for k in doc if ids is None else [k for k in ids if k in doc]:
        for j, t in enumerate(doc[k] if isinstance(doc[k], list) else [doc[k]]):
            out.add(video_key(k), t, f"{k}[{j}]")
    return out
