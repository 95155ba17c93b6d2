"""WebVTT and SRT subtitle files: cues, cleaning, YouTube's rolling duplicates, cutting by time span.

Reading a file gives `Cue`s whose text is the words *first shown* in that cue, cleaned, so that
joining cues never repeats a word, and `segments` group them into what a person would write down:
one displayed line (YouTube auto-captions) or one cue (broadcast subtitles), each once.

Cleaning rules (docs/ANALYSIS.md, "Subtitle cleaning"; each has a test):
 1. Everything before the first timing line is header (`WEBVTT`, `Kind:`, `Language:`, `Style:`
    rules); `NOTE`, `STYLE` and `REGION` blocks and cue ids (the line right before a timing line,
    after a blank one) are not text.
 2. A timing line `START --> END [settings]` starts a cue even without a blank line before it;
    times may have 1-2 digit fields, `,` or `.` before the milliseconds, and no hours
    (`00:00:5,000`, `01:02.5`); cue settings are dropped. A cue ends at an empty line, or at a
    whitespace-only line followed by a new block (YouTube puts a " " line inside cues).
 3. In a text line: word-timestamp tags `<00:05:04.199>` and every other tag (`<c>`, `<c.color..>`,
    `<i>`, `<b>`, `<u>`, `<v Name>`, `<font ..>`) and SRT/ASS overrides `{\\an8}` are removed;
    HTML entities are decoded (`&amp;` -> `&`, `&nbsp;` -> space); bracketed labels (`[Ana]`,
    `[Music]`) and the speaker-change marks `>>` and a leading dialogue dash `- ` are removed;
    whitespace runs become one space. A line left empty is dropped.
 4. Rolling duplicates: a line equal to a line of the previous (non-empty) cue is a repeat and
    dropped; a line that starts with such a line (whole words) adds only the words after it, which
    continue that line's segment. So "we went / down", "down to the river", "down to the river"
    read as "we went down to the river", once.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.annotations.records import AnnotationError, Annotations, Record, clean_text
from pipeline.annotations.textfile import read_text

SUBTITLE_SUFFIXES = (".vtt", ".srt")
_TIMING_RE = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)(?:\s.*)?$")
_TIME_RE = re.compile(r"^(?:(\d{1,3}):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?$")
_TAG_RE = re.compile(r"<[^>]*>")
_ASS_RE = re.compile(r"\{\\[^}]*\}")
_BRACKET_RE = re.compile(r"\[[^\]]*\]")
_LEAD_MARK_RE = re.compile(r"^(?:>>+|-\s)\s*")
_BLOCK_WORDS = ("NOTE", "STYLE", "REGION")


@dataclass(frozen=True, slots=True)
class Cue:
    """The words first shown in one cue, cleaned; `continues` = they extend the previous segment."""

    start: float
    end: float
    text: str
    continues: bool = False


def parse_time(text: str) -> float:
    """`HH:MM:SS.mmm`, `HH:MM:SS,mmm`, `MM:SS.mmm`, sloppy `0:0:5,5` -> seconds; ValueError if bad."""
    m = _TIME_RE.match(text.strip())
    if m is None:
        raise ValueError(f"bad timestamp {text!r}")
    h, mi, s, frac = m.groups()
    if int(s) > 59 or (h is not None and int(mi) > 59):
        raise ValueError(f"bad timestamp {text!r}")
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int((frac or "0").ljust(3, "0")) / 1000


def clean_line(line: str) -> str:
    """Rule 3 of the module docstring: one subtitle text line as the words it shows."""
    line = _ASS_RE.sub("", _TAG_RE.sub("", line))
    line = html.unescape(line).replace("\u200e", "").replace("\u200f", "")
    line = _BRACKET_RE.sub(" ", line)
    line = _LEAD_MARK_RE.sub("", line.strip())
    return clean_text(line)


def _starts_block(lines: Sequence[str], k: int) -> bool:
    """Does line k begin a new block (a timing line, a cue id before one, or NOTE/STYLE/REGION)?"""
    line = lines[k]
    if _TIMING_RE.match(line) or line.split(" ", 1)[0].strip() in _BLOCK_WORDS:
        return True
    return k + 1 < len(lines) and _TIMING_RE.match(lines[k + 1]) is not None


def _cue_ends(lines: Sequence[str], j: int) -> bool:
    """A blank line j ends the cue when empty, or when whitespace-only and followed by a new block."""
    if lines[j] == "":
        return True
    k = j + 1
    while k < len(lines) and not lines[k].strip():
        k += 1
    return k == len(lines) or _starts_block(lines, k)


def raw_cues(lines: Sequence[str], where: str) -> Iterator[tuple[float, float, list[str]] | str]:
    """(start, end, text lines) per cue, in file order; a cue with bad times yields a problem string."""
    i, n = 0, len(lines)
    while i < n:
        m = _TIMING_RE.match(lines[i])
        if m is None:
            i += 1
            continue
        j, text = i + 1, []
        while j < n and not _TIMING_RE.match(lines[j]):
            if not lines[j].strip():
                if _cue_ends(lines, j):
                    break
            else:
                text.append(lines[j])
            j += 1
        # a cue id written right above the next timing line, with no blank line before it, is not text
        if j < n and text and _TIMING_RE.match(lines[j]) and text[-1].strip().isdigit() and len(text) > 1:
            text.pop()
        try:
            start, end = parse_time(m.group(1)), parse_time(m.group(2))
        except ValueError as e:
            yield f"{where}:{i + 1}: {e}"
        else:
            yield start, end, text
        i = j


def collapse(cues: Sequence[tuple[float, float, list[str]]]) -> list[Cue]:
    """Rule 4 of the module docstring: the words each cue adds, each word once."""
    out: list[Cue] = []
    prev: list[str] = []
    for start, end, text in cues:
        lines = [c for c in (clean_line(t) for t in text) if c]
        if not lines:
            continue
        parts: list[str] = []
        continues = False
        for line in lines:
            if line in prev:
                continue
            grown = max((p for p in prev if line.startswith(p + " ")), key=len, default=None)
            if grown is not None:
                continues = continues or not parts  # the cue's first new words extend a line
                parts.append(line[len(grown) :].strip())
            else:
                parts.append(line)
        prev = lines
        if parts:
            out.append(Cue(start, end, " ".join(parts), continues))
    return out


def segments(cues: Sequence[Cue]) -> list[Cue]:
    """Cues joined where one continues the previous: one entry per displayed line or broadcast cue."""
    out: list[Cue] = []
    for c in cues:
        if c.continues and out:
            last = out[-1]
            out[-1] = Cue(last.start, max(last.end, c.end), f"{last.text} {c.text}")
        else:
            out.append(Cue(c.start, c.end, c.text))
    return out


def text_in_span(cues: Sequence[Cue], start: float, end: float) -> str:
    """The words of every cue overlapping [start, end): a clip's subtitle, cue-level."""
    return " ".join(c.text for c in cues if c.start < end and c.end > start)


def read_cues(path: Path, fmt: str | None = None) -> tuple[list[Cue], list[str]]:
    """Collapsed cues of one .vtt / .srt file and the problems met (cues with bad times, skipped).

    `fmt` is "webvtt" or "srt" (default: from the suffix, else from the first line). Raises
    AnnotationError when the file has no readable cue or a WebVTT file lacks its header."""
    fmt = fmt or ("srt" if path.suffix.lower() == ".srt" else "webvtt")
    expected = (
        "webvtt expects a WebVTT file (first line 'WEBVTT', then 'START --> END' cues)"
        if fmt == "webvtt"
        else "srt expects an SRT file (index, 'HH:MM:SS,mmm --> HH:MM:SS,mmm', text, blank line)"
    )
    text = read_text(path, expected)
    lines = text.split("\n")
    if fmt == "webvtt" and not lines[0].lstrip().startswith("WEBVTT"):
        raise AnnotationError(path, expected, f"first line {lines[0][:60]!r}")
    good: list[tuple[float, float, list[str]]] = []
    problems: list[str] = []
    for c in raw_cues(lines, path.name):
        if isinstance(c, str):
            problems.append(c)
        else:
            good.append(c)
    if not good:
        why = (
            f"no cue with readable times ({problems[0]})" if problems else f"no cue; starts {lines[0][:60]!r}"
        )
        raise AnnotationError(path, expected, why)
    return collapse(good), problems


def subtitle_files(folder: Path) -> dict[str, Path]:
    """video id -> subtitle file of a folder of per-video .vtt/.srt files (searched recursively).

    The id is the file name up to its first dot, so yt-dlp's `<id>.en.vtt` counts; when a video has
    several files the first in sorted path order wins."""
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in SUBTITLE_SUFFIXES:
            found.setdefault(p.name.split(".", 1)[0], p)
    return found


def read_subtitles(path: Path, fmt: str, unit: str = "segment") -> Annotations:
    """A .vtt/.srt file or a folder of them as records: one per segment (default), per cue, or per
    file (`unit`), video id = the file's id, times = the segment's span."""
    if unit not in ("segment", "cue", "file"):
        raise AnnotationError(path, f"{fmt} option unit is one of 'segment', 'cue', 'file'", repr(unit))
    if path.is_dir():
        files = subtitle_files(path)
        if not files:
            raise AnnotationError(path, f"{fmt} expects a folder of .vtt/.srt files", "none")
    else:
        files = {path.name.split(".", 1)[0]: path}
    out = Annotations(path, fmt)
    for vid, p in files.items():
        one = fmt if fmt in ("webvtt", "srt") else None
        cues, problems = read_cues(p, one)
        for pr in problems:
            out.problem(pr, counted=False)
        units = segments(cues) if unit == "segment" else cues
        if unit == "file":
            out.add(vid, " ".join(c.text for c in cues), p.name, start=cues[0].start, end=cues[-1].end)
            continue
        for c in units:
            out.rows += 1
            out.records.append(Record(vid, c.text, start=c.start, end=c.end))
    if path.is_dir():
        out.notes.append(f"{len(files)} subtitle file(s)")
    return out
