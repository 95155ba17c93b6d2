"""Which annotation format a file is in, from its name and first bytes (or its JSON structure).

Detection never guesses between a JSON file and a delimited one: the first character decides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.annotations.records import AnnotationError
from pipeline.annotations.subtitles import SUBTITLE_SUFFIXES, subtitle_files
from pipeline.annotations.textfile import is_parquet, parse_json, starts_like_json

_SRT_TIMING_RE = re.compile(r"^\s*\d{1,3}:\d{1,2}:\d{1,2}[,.]\d{1,3}\s*-->")
PROBE_BYTES = 1 << 16


def _json_kind(doc: object) -> str | None:
    if isinstance(doc, dict):
        if isinstance(doc.get("sentences"), list):
            return "msrvtt_json"
        if isinstance(doc.get("annotations"), list) or isinstance(doc.get("images"), list):
            return "coco_json"
        values = list(doc.values())[:50]
        if values and all(isinstance(v, dict) and "sentences" in v for v in values):
            return "activitynet_json"
        if values and all(isinstance(v, list) for v in values):
            return "msvd_json"
    if isinstance(doc, list) and doc:
        head = doc[:50]
        if any(isinstance(d, dict) and "description" in d for d in head):
            return "didemo_json"
        if any(isinstance(d, dict) and "caption" in d for d in head):
            return "caption_list_json"
        if all(isinstance(d, str) for d in head):
            return "id_json"
    return None


def _delimited_kind(first: str) -> str | None:
    if "\t" in first:
        fields = first.split("\t")
        if len(fields) == 6:
            return "lsmdc_tsv"
        if len(fields) == 2 and any(f.strip().lower().startswith(("http://", "https://")) for f in fields):
            return "cc_tsv"
        return None
    for delim in (",", ";"):
        header = [h.strip() for h in first.split(delim)]
        if "sentence" in header:
            return "msrvtt_csv"
        if "videoid" in header and "name" in header:
            return "webvid_csv"
        if header == ["video_id"]:
            return "msrvtt_ids"
    return None


def _head(path: Path, expected: str) -> str:
    """The first PROBE_BYTES of a text file, decoded (a character cut at the end is dropped), newlines
    normalised: enough to tell the format without reading a 12M-line file whole."""
    with path.open("rb") as f:
        raw = f.read(PROBE_BYTES)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if e.start < len(raw) - 3:
            raise AnnotationError(path, expected, f"bytes that are not UTF-8 at byte {e.start}") from None
        text = raw[: e.start].decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def detect_format(path: Path) -> str:
    """The format name of `path` (see `FORMATS`); AnnotationError when it cannot be told."""
    path = Path(path)
    expected = "an annotation file of a known format (or pass the format's name)"
    if path.is_dir():
        if subtitle_files(path):
            return "subtitle_folder"
        raise AnnotationError(path, expected, "a folder without .vtt/.srt files")
    if not path.is_file():
        raise AnnotationError(path, expected, "no such file")
    suffix = path.suffix.lower()
    if suffix in SUBTITLE_SUFFIXES:
        return "srt" if suffix == ".srt" else "webvtt"
    if is_parquet(path):
        names = pq.ParquetFile(path).schema_arrow.names
        if "caption" in names:
            return "captions_parquet"
        if "text" in names:
            return "subtitles_jsonl"
        raise AnnotationError(path, expected, f"a Parquet file with columns {names[:8]}")
    text = _head(path, expected)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise AnnotationError(path, expected, "an empty file")
    if lines[0].lstrip().startswith("WEBVTT"):
        return "webvtt"
    if len(lines) > 1 and lines[0].strip().isdigit() and _SRT_TIMING_RE.match(lines[1]):
        return "srt"
    if starts_like_json(text):
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError:
            first = None
        if isinstance(first, dict) and "text" in first and ("clip_id" in first or len(lines) > 1):
            return "subtitles_jsonl"
        kind = _json_kind(parse_json(path, expected) if first is None or len(lines) == 1 else first)
        if kind:
            return kind
        raise AnnotationError(path, expected, f"JSON of no known layout (starts {text.lstrip()[:60]!r})")
    kind = _delimited_kind(lines[0])
    if kind:
        return kind
    if suffix == ".txt" and all(len(ln.split()) == 1 for ln in lines[:50]):
        return "id_list"
    raise AnnotationError(path, expected, f"a first line of no known layout: {lines[0][:60]!r}")
