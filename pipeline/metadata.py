"""Streaming reader of HD-VILA-100M metadata (CONTRACTS §1) and of optional subtitles.

Every clip entry of every metadata line becomes one `ClipRow`, in file order. A bad line or entry
becomes a row whose `error` says why ("metadata: <reason> (file:line)"), so that every input clip
appears exactly once in the outputs and nothing is silently dropped. Nothing here holds the whole
corpus in memory: rows are streamed, and duplicate keys are found with a compact open-addressing
set of 8-byte digests (about 16-32 bytes per clip, i.e. 1.6-3.2 GB for 100M clips).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import sqlite3
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.annotations import AnnotationError, read_cues, subtitle_files, text_in_span
from pipeline.annotations.hdvila import iter_clip_texts
from pipeline.atomic import write_text_atomic

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".ts")
_VIDEO_EXT_SET = frozenset(VIDEO_EXTENSIONS)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TIME_RE = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)(?:\.(\d{1,6}))?$")


@dataclass
class ClipRow:
    """One input clip, in global metadata order."""

    index: int
    clip_id: str
    video_id: str
    span_start: float | None
    span_end: float | None
    source: str  # "file:line"
    error: str | None = None  # None or "metadata: <reason>"

    @property
    def key(self) -> str:
        """WebDataset key (CONTRACTS §3); "" when the clip id is unusable."""
        if self.error is not None and not is_safe_name(self.clip_id):
            return ""
        return clip_key(self.clip_id)

    @property
    def span_fractions(self) -> tuple[Fraction, Fraction]:
        """The span as exact fractions (parsed times are decimal, so this is lossless)."""
        assert self.span_start is not None and self.span_end is not None
        return _to_fraction(self.span_start), _to_fraction(self.span_end)


def _to_fraction(seconds: float) -> Fraction:
    # Spans are parsed from decimal text with at most microsecond precision.
    return Fraction(round(seconds * 1_000_000), 1_000_000)


def parse_time(text: object) -> float:
    """Parse "HH:MM:SS.mmm" (1-3 hour digits, optional fraction) into seconds; ValueError if bad."""
    if not isinstance(text, str):
        raise ValueError(f"time is not a string: {text!r}")
    m = _TIME_RE.match(text.strip())
    if m is None:
        raise ValueError(f"bad time {text!r} (want HH:MM:SS.mmm)")
    h, mi, s, frac = m.groups()
    micros = int((frac or "0").ljust(6, "0"))
    return int(h) * 3600 + int(mi) * 60 + int(s) + micros / 1_000_000


def clip_key(clip_id: str) -> str:
    """The clip id without its video extension, dots replaced by underscores."""
    stem, dot, ext = clip_id.rpartition(".")
    if dot and "." + ext.lower() in _VIDEO_EXT_SET:
        clip_id = stem
    return clip_id.replace(".", "_")


def is_safe_name(name: object) -> bool:
    """True when `name` can be used as one path component under an output or video root."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        return False
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        return False
    return _CONTROL_RE.search(name) is None


def expand_metadata(patterns: Sequence[str]) -> list[Path]:
    """Resolve paths/globs to a sorted, de-duplicated file list (order: pattern order, then name)."""
    files: list[Path] = []
    seen: set[str] = set()
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise FileNotFoundError(f"metadata pattern matched no files: {pattern}")
        for m in matches:
            p = Path(m)
            if not p.is_file():
                raise FileNotFoundError(f"metadata file not found: {m}")
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                files.append(p)
    return files


class DigestSet:
    """Open-addressing hash set of 64-bit digests in a flat uint64 array (0 marks an empty slot).

    8 bytes per slot at load factor <= 1/2: 16-32 bytes per key, versus ~100 for a Python set of ints.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._alloc(1 << max(4, (capacity * 2 - 1).bit_length()))
        self._count = 0

    def _alloc(self, size: int) -> None:
        # array('Q') indexing returns plain ints, several times faster than numpy scalar access.
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def digest(text: str) -> int:
        d = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
        return d or 1  # 0 is the empty marker

    def add(self, text: str) -> bool:
        """Insert; return False when already present (a 64-bit digest collision counts as present)."""
        d = self.digest(text)
        table, mask = self._table, self._mask
        i = (d >> 7) & mask
        while True:
            v = table[i]
            if v == 0:
                break
            if v == d:
                return False
            i = (i + 1) & mask
        table[i] = d
        self._count += 1
        if self._count * 2 > len(table):
            self._grow()
        return True

    def _grow(self) -> None:
        old = np.frombuffer(self._table, dtype=np.uint64)
        old = old[old != 0].tolist()
        self._alloc(len(self._table) * 2)
        table, mask = self._table, self._mask
        for v in old:
            i = (v >> 7) & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = v


def _line_rows(obj: object, source: str, start_index: int) -> list[ClipRow]:
    """Turn one parsed metadata line into rows (errors included)."""

    def bad(reason: str, clip_id: str = "", video_id: str = "") -> ClipRow:
        return ClipRow(start_index, clip_id, video_id, None, None, source, f"metadata: {reason} ({source})")

    if not isinstance(obj, dict):
        return [bad("line is not a JSON object")]
    video_id = obj.get("video_id")
    clips = obj.get("clip")
    if not isinstance(clips, list):
        vid = video_id if isinstance(video_id, str) else ""
        return [bad("missing or non-list field 'clip'", video_id=vid)]
    video_problem = None
    if not isinstance(video_id, str) or not video_id:
        video_problem = "missing or non-string field 'video_id'"
        video_id = video_id if isinstance(video_id, str) else ""
    elif not is_safe_name(video_id):
        video_problem = f"unsafe video_id {video_id!r}"
    rows = []
    for k, entry in enumerate(clips):
        index = start_index + k
        row = _clip_row(entry, str(video_id), source, index)
        if video_problem is not None and row.error is None:
            row.error = f"metadata: {video_problem} ({source})"
        rows.append(row)
    return rows


def _clip_row(entry: object, video_id: str, source: str, index: int) -> ClipRow:
    def bad(reason: str, clip_id: str = "") -> ClipRow:
        return ClipRow(index, clip_id, video_id, None, None, source, f"metadata: {reason} ({source})")

    if not isinstance(entry, dict):
        return bad("clip entry is not an object")
    clip_id = entry.get("clip_id")
    if not isinstance(clip_id, str) or not clip_id:
        return bad("missing or non-string field 'clip_id'")
    if not is_safe_name(clip_id):  # also rules out ids that are only an extension (".mp4")
        return bad(f"unsafe clip_id {clip_id!r}", clip_id)
    span = entry.get("span")
    if not isinstance(span, list | tuple) or len(span) != 2:
        return bad("missing field 'span' or not [start, end]", clip_id)
    try:
        start, end = parse_time(span[0]), parse_time(span[1])
    except ValueError as e:
        return bad(str(e), clip_id)
    if end <= start:
        row = bad(f"span end {span[1]} <= start {span[0]}", clip_id)
        row.span_start, row.span_end = start, end
        return row
    return ClipRow(index, clip_id, video_id, start, end, source)


def _parse_line(text: str | None, source: str, index: int) -> list[ClipRow]:
    if text is None:
        return [ClipRow(index, "", "", None, None, source, f"metadata: line is not UTF-8 ({source})")]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return [ClipRow(index, "", "", None, None, source, f"metadata: bad JSON: {e.msg} ({source})")]
    return _line_rows(obj, source, index)


def iter_clips(metadata: Sequence[str | Path]) -> Iterator[ClipRow]:
    """Stream every clip of the metadata files (paths or globs) in order, bad lines as failed rows.

    Duplicate keys (the same clip id twice, or two ids with the same WebDataset key) fail every
    occurrence after the first.
    """
    files = expand_metadata([str(m) for m in metadata])
    seen = DigestSet()
    index = 0
    for path in files:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                source = f"{path.name}:{lineno}"
                try:
                    text = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    text = None
                if text == "":
                    continue
                rows = _parse_line(text, source, index)
                for row in rows:
                    # Keys of failed rows are registered too, so a later copy is still a duplicate.
                    key = row.key
                    fresh = seen.add(key) if key else True
                    if row.error is None and not fresh:
                        row.error = f"metadata: duplicate clip id {row.clip_id!r} ({source})"
                    yield row
                index += len(rows)


class SubtitleStore(Mapping[str, str]):
    """clip_id -> subtitle text, backed by an SQLite index built once next to the outputs.

    Subtitles of 100M clips do not fit comfortably in every worker's memory; the index is built by
    streaming the JSON-lines or Parquet file and is picklable (workers reopen it by path).
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._conn: sqlite3.Connection | None = None

    def __getstate__(self) -> dict:
        return {"db_path": self.db_path}

    def __setstate__(self, state: dict) -> None:
        self.db_path = state["db_path"]
        self._conn = None

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        return self._conn

    def __getitem__(self, clip_id: str) -> str:
        row = self._c().execute("SELECT text FROM sub WHERE clip_id = ?", (clip_id,)).fetchone()
        if row is None:
            raise KeyError(clip_id)
        return row[0]

    def __iter__(self) -> Iterator[str]:
        for (cid,) in self._c().execute("SELECT clip_id FROM sub"):
            yield cid

    def __len__(self) -> int:
        return int(self._c().execute("SELECT COUNT(*) FROM sub").fetchone()[0])


def _iter_subtitle_records(path: Path) -> Iterator[tuple[str, str] | None]:
    """(clip_id, text) of a {clip_id, text} JSON-lines or Parquet file; None for a bad record."""
    for _, rec in iter_clip_texts(path):
        ok = (
            isinstance(rec, dict) and isinstance(rec.get("clip_id"), str) and isinstance(rec.get("text"), str)
        )
        yield (rec["clip_id"], rec["text"]) if ok else None  # type: ignore[index]


def _iter_folder_records(folder: Path, metadata: Sequence[str | Path]) -> Iterator[tuple[str, str] | None]:
    """(clip_id, text) for every clip whose video has a .vtt/.srt file in `folder`: the cues overlapping
    the clip's span (cue level, docs/PIPELINE.md). An unreadable subtitle file is one None (logged)."""
    files = subtitle_files(folder)
    video, cues = None, None
    for row in iter_clips(metadata):
        if row.error is not None or row.span_start is None or row.span_end is None:
            continue
        if row.video_id != video:
            video, cues = row.video_id, None
            path = files.get(video)
            if path is not None:
                try:
                    cues = read_cues(path)[0]
                except AnnotationError as e:
                    log.warning("subtitles: %s", e)
                    yield None
        if cues is not None:
            yield row.clip_id, text_in_span(cues, row.span_start, row.span_end)


def _index_tag(path: Path, metadata: Sequence[str | Path] | None) -> str:
    """Names the index after what it was built from: the file, or the folder's files and the metadata."""
    if not path.is_dir():
        st = path.stat()
        return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    h = hashlib.sha1(str(path.resolve()).encode())
    inputs = sorted(subtitle_files(path).values()) + expand_metadata([str(m) for m in metadata or []])
    for p in inputs:
        st = p.stat()
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def open_subtitles(
    path: Path, index_dir: Path, metadata: Sequence[str | Path] | None = None
) -> tuple[SubtitleStore, int]:
    """Build (or reuse) the SQLite index of the subtitles; returns (store, bad record count).

    `path` is a {clip_id, text} JSON-lines or Parquet file, or a folder of per-video .vtt/.srt files
    (named `<video_id>.vtt`, `<video_id>.en.vtt`, ...) cut by each clip's span in `metadata`. Bad records
    are skipped (subtitles are optional text); the first occurrence of a clip id wins.
    """
    path = Path(path)
    if path.is_dir() and metadata is None:
        raise ValueError(f"subtitles folder {path}: the metadata is needed to cut it into clips")
    index_dir.mkdir(parents=True, exist_ok=True)
    tag = _index_tag(path, metadata)
    db = index_dir / f"subtitles-{tag}.sqlite"
    meta = index_dir / f"subtitles-{tag}.json"
    if db.exists() and meta.exists():
        return SubtitleStore(db), int(json.loads(meta.read_text())["bad_records"])
    tmp = db.with_suffix(f".tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    conn.execute("CREATE TABLE sub (clip_id TEXT PRIMARY KEY, text TEXT NOT NULL)")
    bad = 0
    batch: list[tuple[str, str]] = []
    records = _iter_folder_records(path, metadata or []) if path.is_dir() else _iter_subtitle_records(path)
    for rec in records:
        if rec is None:
            bad += 1
            continue
        batch.append(rec)
        if len(batch) >= 50_000:
            conn.executemany("INSERT OR IGNORE INTO sub VALUES (?, ?)", batch)
            batch.clear()
    conn.executemany("INSERT OR IGNORE INTO sub VALUES (?, ?)", batch)
    conn.commit()
    conn.close()
    os.replace(tmp, db)
    write_text_atomic(meta, json.dumps({"source": str(path), "bad_records": bad}))  # read only when whole
    return SubtitleStore(db), bad
