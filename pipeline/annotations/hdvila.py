"""The corpus's own texts: HD-VILA subtitles as JSON lines or Parquet (`{clip_id, text}`, CONTRACTS §1),
the job's `captions.parquet` (`key, clip_id, caption, captioner`, CONTRACTS §3), and plain text lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.annotations.records import AnnotationError, Annotations
from pipeline.annotations.textfile import is_parquet, iter_lines

SUBTITLE_ID_FIELD = "clip_id"
SUBTITLE_TEXT_FIELD = "text"
CAPTION_COLUMN = "caption"
PARQUET_BATCH_ROWS = 65536


def _string_column(path: Path, fmt: str, column: str, pf: pq.ParquetFile) -> None:
    names = pf.schema_arrow.names
    if column not in names:
        raise AnnotationError(
            path,
            f"{fmt} expects a Parquet file with a {column!r} column",
            f"no {column!r} column (columns: {names})",
        )
    kind = pf.schema_arrow.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise AnnotationError(
            path, f"{fmt} expects a string column {column!r}", f"column {column!r} of type {kind}"
        )


def _open_parquet(path: Path, fmt: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise AnnotationError(path, f"{fmt} expects a Parquet file", str(e).split("\n")[0]) from None


def iter_clip_texts(
    path: Path, fmt: str = "subtitles_jsonl", field: str = SUBTITLE_TEXT_FIELD
) -> Iterator[tuple[int, object]]:
    """(line or row number, parsed record) of a subtitles JSON-lines or Parquet file, streamed; a line
    that is not JSON yields its error message as a string. Shared by the NMI reader and the pipeline's
    subtitle index."""
    if is_parquet(path):
        pf = _open_parquet(path, fmt)
        _string_column(path, fmt, field, pf)
        cols = [c for c in (SUBTITLE_ID_FIELD, field) if c in pf.schema_arrow.names]
        n = 0
        for batch in pf.iter_batches(columns=cols, batch_size=PARQUET_BATCH_ROWS):
            for rec in batch.to_pylist():
                n += 1
                yield n, rec
        return
    # Decoded line by line, so one bad byte in a 100M-line file costs one record, not the file.
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if n == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield n, f"line {n}: not UTF-8"
            except json.JSONDecodeError as e:
                yield n, f"line {n}: bad JSON ({e.msg})"


def read_subtitles_jsonl(
    path: Path, fmt: str = "subtitles_jsonl", field: str = SUBTITLE_TEXT_FIELD
) -> Annotations:
    """One record per subtitle; `text` may be a list of strings (CLIP-ViP's `{clip_id, text: [...]}`),
    each one record. Bad lines are counted; a file with no good line is refused."""
    out = Annotations(path, fmt)
    seen = 0
    for n, rec in iter_clip_texts(path, fmt, field):
        seen += 1
        if isinstance(rec, str):
            out.problem(rec, counted=False)
        elif not isinstance(rec, dict) or field not in rec:
            out.problem(f"line {n}: no {field!r} field", counted=False)
        else:
            cid = rec.get(SUBTITLE_ID_FIELD)
            value = rec[field]
            for t in value if isinstance(value, list) else [value]:
                out.add(cid if isinstance(cid, str) else "", t, f"line {n}")
    if seen and out.malformed == seen:
        raise AnnotationError(
            path,
            f"{fmt} expects JSON lines with a {field!r} field",
            f"none of {seen} line(s) qualifies ({'; '.join(out.problems)})",
        )
    return out


def read_captions_parquet(
    path: Path, fmt: str = "captions_parquet", column: str = CAPTION_COLUMN
) -> Annotations:
    """One record per row of a string column (`caption` of captions.parquet, or e.g. `subtitle` of a
    shard Parquet); the row's `clip_id` (else `key`) is its id. Null captions (failed clips) are empty."""
    pf = _open_parquet(path, fmt)
    _string_column(path, fmt, column, pf)
    names = pf.schema_arrow.names
    idcol = next((c for c in ("clip_id", "key") if c in names and c != column), None)
    out = Annotations(path, fmt)
    for batch in pf.iter_batches(
        columns=[column] + ([idcol] if idcol else []), batch_size=PARQUET_BATCH_ROWS
    ):
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if idcol else [""] * len(texts)
        for t, cid in zip(texts, ids, strict=True):
            out.add(str(cid or ""), t, f"row {out.rows}")
    return out


def read_text_lines(path: Path, fmt: str = "text_lines") -> Annotations:
    """One text per line (any newline style); blank lines count as empty."""
    out = Annotations(path, fmt)
    for n, line in enumerate(iter_lines(path, f"{fmt} expects a UTF-8 text file"), start=1):
        out.add("", line, f"line {n}")
    return out
