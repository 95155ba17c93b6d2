"""Text sources for the NMI domain-gap analysis: a TOML registry and loaders for the published formats.

Registry (paths are relative to the TOML file's directory)::

    [sources.msrvtt]
    format = "msrvtt_csv"
    path = "data/msrvtt/MSRVTT_JSFUSION_test.csv"

    [sources.didemo]
    format = "didemo_json"
    path = "data/didemo/test_data.json"
    mode = "paragraph"          # option: sentence (default) | paragraph

Every loader returns a `LoadedSource`: the texts (stripped, non-empty, in file order, duplicates kept
because the paper samples from the data as it is) and counts of what it skipped and why. A file that
does not look like its declared format raises `SourceFormatError` naming the file, the format and what
was found instead.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Each format's text field, one place per default.
MSRVTT_CSV_COLUMN = "sentence"
WEBVID_CSV_COLUMN = "name"
CAPTIONS_PARQUET_COLUMN = "caption"
SUBTITLES_JSONL_FIELD = "text"
SNIFF_DELIMITERS = (",", ";", "\t", "|")
MAX_REPORTED_PROBLEMS = 5  # line numbers quoted per kind of problem


class SourceFormatError(ValueError):
    """The file is not what its declared format says (or the registry entry is wrong)."""


@dataclass(frozen=True)
class SourceSpec:
    """One `[sources.NAME]` entry of the registry."""

    name: str
    format: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedSource:
    """The texts of one source plus an account of what was skipped."""

    spec: SourceSpec
    texts: list[str]
    rows: int = 0  # records read (rows, lines, annotations) before filtering
    empty: int = 0  # records whose text was empty or whitespace only
    malformed: int = 0  # records that could not be parsed (short rows, bad JSON lines, non-string text)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = (
            f"{self.spec.name}: {len(self.texts)} texts from {self.spec.path} ({self.spec.format}); "
            f"{self.rows} records, {self.empty} empty skipped, {self.malformed} malformed skipped"
        )
        return s + "".join(f"\n  note: {n}" for n in self.notes)


# ----------------------------------------------------------------------------------------------- registry


def load_registry(toml_path: Path) -> dict[str, SourceSpec]:
    """Parse a sources TOML file; relative paths resolve against the TOML file's directory."""
    toml_path = Path(toml_path)
    try:
        with toml_path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise SourceFormatError(f"sources registry {toml_path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise SourceFormatError(f"sources registry {toml_path} is not valid TOML: {e}") from None
    table = doc.get("sources")
    if not isinstance(table, dict) or not table:
        raise SourceFormatError(f"{toml_path}: expected one or more [sources.NAME] tables")
    base = toml_path.resolve().parent
    specs: dict[str, SourceSpec] = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise SourceFormatError(f"{toml_path}: [sources.{name}] must be a table")
        fmt, path = entry.get("format"), entry.get("path")
        if not isinstance(fmt, str) or fmt not in LOADERS:
            raise SourceFormatError(
                f"{toml_path}: [sources.{name}] format {fmt!r} is not one of {sorted(LOADERS)}"
            )
        if not isinstance(path, str) or not path:
            raise SourceFormatError(f"{toml_path}: [sources.{name}] needs a path")
        options = {k: v for k, v in entry.items() if k not in ("format", "path")}
        unknown = set(options) - OPTIONS[fmt]
        if unknown:
            raise SourceFormatError(
                f"{toml_path}: [sources.{name}] unknown option(s) {sorted(unknown)} for format {fmt} "
                f"(allowed: {sorted(OPTIONS[fmt]) or 'none'})"
            )
        p = Path(path).expanduser()
        path_ = p if p.is_absolute() else Path(os.path.normpath(base / p))  # "a/../data" -> "data"
        specs[name] = SourceSpec(name=name, format=fmt, path=path_, options=options)
    return specs


def load_source(spec: SourceSpec) -> LoadedSource:
    """Load one source's texts with the loader of its format."""
    if not spec.path.is_file():
        raise FileNotFoundError(f"source {spec.name}: file {spec.path} does not exist")
    out = LoadedSource(spec=spec, texts=[])
    LOADERS[spec.format](spec, out)
    if out.malformed:
        out.notes.append(f"{out.malformed} malformed record(s) skipped")
    return out


# ----------------------------------------------------------------------------------------------- helpers


def _refuse_parquet(spec: SourceSpec) -> None:
    with spec.path.open("rb") as f:
        if f.read(4) == b"PAR1":
            raise SourceFormatError(f"{spec.path}: is a Parquet file, not {spec.format} text")


def _not_utf8(spec: SourceSpec, e: UnicodeDecodeError, where: str) -> SourceFormatError:
    return SourceFormatError(
        f"{spec.path}: not UTF-8 text ({where}, bytes {e.object[e.start : e.start + 4]!r}); "
        f"format {spec.format} expects a UTF-8 text file"
    )


def _read_text(spec: SourceSpec) -> str:
    """Whole file as text (JSON and headed CSV formats): UTF-8 with an optional BOM."""
    _refuse_parquet(spec)
    raw = spec.path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(spec, e, f"byte {e.start}") from None


def _iter_lines(spec: SourceSpec) -> Iterator[str]:
    """Lines without their endings, streamed (line files can be CC12M- or HD-VILA-sized): UTF-8 with
    an optional BOM, LF / CRLF / CR newlines."""
    _refuse_parquet(spec)
    lineno = 0
    try:
        with spec.path.open("r", encoding="utf-8-sig", newline=None) as f:
            for line in f:
                lineno += 1  # for the error message
                yield line.rstrip("\n")
    except UnicodeDecodeError as e:
        # the decoder reads ahead in blocks, so only the block's position is known
        raise _not_utf8(spec, e, f"in the block read after line {lineno}") from None


def _malformed(out: LoadedSource, problems: list[str], problem: str) -> None:
    """Count one malformed record (its row is counted by the caller) and keep the first few reasons."""
    out.malformed += 1
    if len(problems) < MAX_REPORTED_PROBLEMS:
        problems.append(problem)


def _add(out: LoadedSource, text: object, where: str, problems: list[str]) -> None:
    """Count one record and keep its text if it is a non-empty string."""
    out.rows += 1
    if text is None:
        out.empty += 1
    elif not isinstance(text, str):
        _malformed(out, problems, f"{where}: text is {type(text).__name__}, not a string")
    elif not text.strip():
        out.empty += 1
    else:
        out.texts.append(text.strip())


def _note_problems(out: LoadedSource, problems: list[str]) -> None:
    if problems:
        out.notes.append("first problems: " + "; ".join(problems))


def _parse_json(spec: SourceSpec, hint: str) -> Any:
    text = _read_text(spec)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        first = text.lstrip()[:60].replace("\n", "\\n")
        raise SourceFormatError(
            f"{spec.path}: not valid JSON for format {spec.format} ({e.msg} at line {e.lineno} col {e.colno}); "
            f"expected {hint}; file starts with {first!r}"
        ) from None


def _csv_rows(spec: SourceSpec, column: str) -> tuple[list[str], Iterator[list[str]]]:
    """Header and row iterator of a headed CSV whose header must contain `column`.

    The delimiter is the registry's `delimiter` option or, when absent, the first candidate whose
    parsed header contains `column` (the published MSR-VTT copies use both `,` and `;`)."""
    text = _read_text(spec)
    first_line = text.split("\n", 1)[0].rstrip("\r")
    forced = spec.options.get("delimiter")
    candidates = (forced,) if forced else SNIFF_DELIMITERS
    for delim in candidates:
        header = next(csv.reader([first_line], delimiter=delim), [])
        header = [h.strip() for h in header]
        if column in header:
            rows = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
            next(rows)  # header
            return header, rows
    shown = next(csv.reader([first_line], delimiter=forced or ","), [])
    raise SourceFormatError(
        f"{spec.path}: format {spec.format} expects a CSV header with a {column!r} column "
        f"(delimiters tried: {list(candidates)}); found header {shown[:8]!r}"
    )


def _load_headed_csv(spec: SourceSpec, out: LoadedSource, default_column: str) -> None:
    column = spec.options.get("column", default_column)
    header, rows = _csv_rows(spec, column)
    idx = header.index(column)
    problems: list[str] = []
    for lineno, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue  # blank line (e.g. a trailing newline): not a record
        if len(row) <= idx:
            out.rows += 1
            _malformed(out, problems, f"line {lineno}: {len(row)} field(s), no {column!r}")
            continue
        _add(out, row[idx], f"line {lineno}", problems)
    _note_problems(out, problems)


# ----------------------------------------------------------------------------------------------- loaders


def load_msrvtt_csv(spec: SourceSpec, out: LoadedSource) -> None:
    """MSR-VTT 1k-A `MSRVTT_JSFUSION_test.csv`: `key,vid_key,video_id,sentence` (or `;`, CRLF, BOM)."""
    _load_headed_csv(spec, out, MSRVTT_CSV_COLUMN)


def load_webvid_csv(spec: SourceSpec, out: LoadedSource) -> None:
    """WebVid `results_*.csv`: `videoid,name,page_idx,page_dir,duration,contentUrl`; `name` is the caption."""
    _load_headed_csv(spec, out, WEBVID_CSV_COLUMN)


def _caption_items(spec: SourceSpec, out: LoadedSource, items: Iterable[Any], key: str) -> None:
    """Records `{key: str | [str, ...]}` (ALPRO/VINDLU/GRDR retrieval json lists)."""
    problems: list[str] = []
    for i, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if isinstance(value, list):
            for j, t in enumerate(value):
                _add(out, t, f"record {i}[{j}]", problems)
        else:
            _add(out, value, f"record {i}", problems)
    _note_problems(out, problems)


def load_msrvtt_json(spec: SourceSpec, out: LoadedSource) -> None:
    """CLIP4Clip `MSRVTT_data.json` (`{"videos": [...], "sentences": [{video_id, caption}]}`, option
    `split` keeps the sentences of videos whose `split` field matches), or a retrieval list
    `[{"video", "caption": str | [str]}]` (`msrvtt_ret_test.json`, `msrvtt_caption_test.json`)."""
    doc = _parse_json(
        spec, 'MSRVTT_data.json ({"videos": [...], "sentences": [...]}) or [{"video", "caption"}]'
    )
    if isinstance(doc, list):
        if spec.options.get("split"):
            raise SourceFormatError(f"{spec.path}: option split needs MSRVTT_data.json, not a retrieval list")
        _caption_items(spec, out, doc, "caption")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("sentences"), list):
        keys = list(doc)[:8] if isinstance(doc, dict) else type(doc).__name__
        raise SourceFormatError(
            f"{spec.path}: format msrvtt_json expects an object with a 'sentences' list "
            f"(MSRVTT_data.json) or a list of {{video, caption}}; found {keys!r}"
        )
    sentences = doc["sentences"]
    split = spec.options.get("split")
    if split:
        videos = doc.get("videos")
        if not isinstance(videos, list):
            raise SourceFormatError(f"{spec.path}: option split={split!r} needs a 'videos' list")
        keep = {v.get("video_id") for v in videos if isinstance(v, dict) and v.get("split") == split}
        if not keep:
            found = sorted({str(v.get("split")) for v in videos if isinstance(v, dict)})
            raise SourceFormatError(f"{spec.path}: no video has split={split!r} (splits present: {found})")
        sentences = [s for s in sentences if isinstance(s, dict) and s.get("video_id") in keep]
    _caption_items(spec, out, sentences, "caption")


def load_didemo_json(spec: SourceSpec, out: LoadedSource) -> None:
    """LocalizingMoments `{train,val,test}_data.json`: `[{annotation_id, description, times, video, ...}]`.

    mode = "sentence" (default): one text per description. mode = "paragraph": the descriptions of
    each video joined with a space in file order (CLIP4Clip's paragraph retrieval). Also reads the
    retrieval list form `[{"video", "caption": [sentences]}]`."""
    mode = spec.options.get("mode", "sentence")
    if mode not in ("sentence", "paragraph"):
        raise SourceFormatError(f"source {spec.name}: mode must be 'sentence' or 'paragraph', not {mode!r}")
    doc = _parse_json(spec, "a list of {annotation_id, description, times, video}")
    if not isinstance(doc, list) or (doc and not isinstance(doc[0], dict)):
        raise SourceFormatError(
            f"{spec.path}: format didemo_json expects a JSON list of annotation objects; "
            f"found {type(doc).__name__}{' with keys ' + repr(list(doc)[:8]) if isinstance(doc, dict) else ''}"
        )
    text_key = (
        "description" if any(isinstance(d, dict) and "description" in d for d in doc[:50]) else "caption"
    )
    if doc and not any(isinstance(d, dict) and text_key in d for d in doc[:50]):
        raise SourceFormatError(
            f"{spec.path}: didemo_json records need 'description' (or 'caption'); "
            f"first record has keys {list(doc[0])[:8]!r}"
        )
    if mode == "sentence":
        _caption_items(spec, out, doc, text_key)
        return
    paragraphs: dict[str, list[str]] = {}
    problems: list[str] = []
    for i, d in enumerate(doc):
        video, value = (d.get("video"), d.get(text_key)) if isinstance(d, dict) else (None, None)
        if not isinstance(video, str):
            out.rows += 1
            _malformed(out, problems, f"record {i}: no 'video'")
            continue
        parts = value if isinstance(value, list) else [value]
        kept = paragraphs.setdefault(video, [])
        for t in parts:
            if isinstance(t, str) and t.strip():
                kept.append(t.strip())
    for video, parts in paragraphs.items():
        _add(out, " ".join(parts), f"video {video}", problems)
    out.notes.append(f"paragraph mode: {len(paragraphs)} videos")
    _note_problems(out, problems)


def load_coco_json(spec: SourceSpec, out: LoadedSource) -> None:
    """COCO `captions_*.json` (`annotations: [{image_id, id, caption}]`), or Karpathy's
    `dataset_coco.json` (`images: [{split, sentences: [{raw}]}]`, option `split`)."""
    doc = _parse_json(spec, "COCO captions json with an 'annotations' list")
    if isinstance(doc, dict) and isinstance(doc.get("annotations"), list):
        _caption_items(spec, out, doc["annotations"], "caption")
        return
    if (
        isinstance(doc, dict)
        and isinstance(doc.get("images"), list)
        and doc["images"]
        and "sentences" in doc["images"][0]
    ):
        split = spec.options.get("split")
        sentences = [
            s
            for img in doc["images"]
            if isinstance(img, dict) and (not split or img.get("split") == split)
            for s in img.get("sentences", [])
        ]
        _caption_items(spec, out, sentences, "raw")
        out.notes.append("Karpathy dataset_coco.json form" + (f", split {split}" if split else ""))
        return
    keys = list(doc)[:8] if isinstance(doc, dict) else type(doc).__name__
    raise SourceFormatError(f"{spec.path}: format coco_json expects an 'annotations' list; found {keys!r}")


def _looks_like_url(s: str) -> bool:
    return s.strip().lower().startswith(("http://", "https://"))


def load_cc_tsv(spec: SourceSpec, out: LoadedSource) -> None:
    """Conceptual Captions TSV, no header, two columns. CC3M puts `caption<TAB>url`, CC12M
    `url<TAB>caption`: the URL column is detected (or set with option `caption_column` = 0 | 1)."""
    # QUOTE_NONE: alt-texts contain unbalanced quotes and the files are not CSV-quoted.
    reader = csv.reader(_iter_lines(spec), delimiter="\t", quoting=csv.QUOTE_NONE)
    head = list(itertools.islice(reader, 200))  # probe rows for the column order
    rows = itertools.chain(head, reader)
    two = [r for r in head if len(r) == 2]
    if any(head) and not two:
        raise SourceFormatError(
            f"{spec.path}: format cc_tsv expects two tab-separated columns (caption, url); "
            f"first line has {len(head[0])} field(s): {head[0][:3]!r}"
        )
    cap_col = spec.options.get("caption_column")
    if cap_col is None:
        probe = two[:200]
        url_first = sum(_looks_like_url(r[0]) for r in probe)
        url_second = sum(_looks_like_url(r[1]) for r in probe)
        if max(url_first, url_second) < len(probe) / 2:
            raise SourceFormatError(
                f"{spec.path}: cc_tsv: neither column looks like image URLs; set caption_column = 0 or 1"
            )
        cap_col = 1 if url_first > url_second else 0
        out.notes.append(f"caption column {cap_col} ({'CC12M' if cap_col else 'CC3M'} order)")
    problems: list[str] = []
    for lineno, r in enumerate(rows, start=1):
        if not r:
            continue  # blank line
        if len(r) != 2:
            out.rows += 1
            _malformed(out, problems, f"line {lineno}: {len(r)} field(s)")
            continue
        if lineno == 1 and {r[0].strip().lower(), r[1].strip().lower()} == {"caption", "url"}:
            out.notes.append("header line skipped")
            continue
        _add(out, r[cap_col], f"line {lineno}", problems)
    _note_problems(out, problems)


def load_subtitles_jsonl(spec: SourceSpec, out: LoadedSource) -> None:
    """JSON lines `{"clip_id", "text"}` (CONTRACTS §1 subtitles); `text` may be a list of strings
    (CLIP-ViP's `{clip_id, text: [...]}` jsonl), each kept as one text. Bad lines are skipped and
    counted; a file with no valid line at all is a format error."""
    key = spec.options.get("field", SUBTITLES_JSONL_FIELD)
    problems: list[str] = []
    seen = 0
    for lineno, line in enumerate(_iter_lines(spec), start=1):
        if not line.strip():
            continue
        seen += 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            out.rows += 1
            _malformed(out, problems, f"line {lineno}: bad JSON ({e.msg})")
            continue
        if not isinstance(rec, dict) or key not in rec:
            out.rows += 1
            _malformed(out, problems, f"line {lineno}: no {key!r} field")
            continue
        value = rec[key]
        for t in value if isinstance(value, list) else [value]:
            _add(out, t, f"line {lineno}", problems)
    if seen and out.malformed == seen:
        raise SourceFormatError(
            f"{spec.path}: format subtitles_jsonl expects JSON lines with a {key!r} field; "
            f"none of {seen} line(s) qualifies ({'; '.join(problems)})"
        )
    _note_problems(out, problems)


def load_captions_parquet(spec: SourceSpec, out: LoadedSource) -> None:
    """The job's `captions.parquet` (`key, clip_id, caption, captioner`; CONTRACTS §3) or any Parquet
    file with a string column (option `column`, e.g. "subtitle" of a shard Parquet). Null captions
    (clips that failed) count as empty."""
    column = spec.options.get("column", CAPTIONS_PARQUET_COLUMN)
    try:
        pf = pq.ParquetFile(spec.path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SourceFormatError(f"{spec.path}: format {spec.format} expects a Parquet file: {e}") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise SourceFormatError(f"{spec.path}: Parquet file has no {column!r} column (columns: {names})")
    if not pa.types.is_string(pf.schema_arrow.field(column).type) and not pa.types.is_large_string(
        pf.schema_arrow.field(column).type
    ):
        raise SourceFormatError(
            f"{spec.path}: column {column!r} is {pf.schema_arrow.field(column).type}, not a string column"
        )
    problems: list[str] = []
    for batch in pf.iter_batches(columns=[column]):
        for i, t in enumerate(batch.column(0).to_pylist()):
            _add(out, t, f"row {out.rows + i}", problems)
    _note_problems(out, problems)


def load_text_lines(spec: SourceSpec, out: LoadedSource) -> None:
    """One text per line (any newline style); blank lines count as empty."""
    problems: list[str] = []
    for lineno, line in enumerate(_iter_lines(spec), start=1):
        _add(out, line, f"line {lineno}", problems)


Loader = Callable[[SourceSpec, LoadedSource], None]

LOADERS: dict[str, Loader] = {
    "msrvtt_csv": load_msrvtt_csv,
    "msrvtt_json": load_msrvtt_json,
    "didemo_json": load_didemo_json,
    "coco_json": load_coco_json,
    "cc_tsv": load_cc_tsv,
    "webvid_csv": load_webvid_csv,
    "subtitles_jsonl": load_subtitles_jsonl,
    "captions_parquet": load_captions_parquet,
    "text_lines": load_text_lines,
}

OPTIONS: dict[str, set[str]] = {
    "msrvtt_csv": {"column", "delimiter"},
    "msrvtt_json": {"split"},
    "didemo_json": {"mode"},
    "coco_json": {"split"},
    "cc_tsv": {"caption_column"},
    "webvid_csv": {"column", "delimiter"},
    "subtitles_jsonl": {"field"},
    "captions_parquet": {"column"},
    "text_lines": set(),
}
