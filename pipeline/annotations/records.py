"""The typed records every annotation reader returns, and the one error type for unreadable input.

A `Record` is one text of one video (or image, or clip): a caption, a query sentence, a subtitle
segment. Readers never group or join; the stages do that (`group_by_video`, paragraph mode).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Extensions stripped from video names to get the id a video file is found by (its stem). Only these:
# LSMDC ids end in ".900"-like time fractions and DiDeMo names may have no extension at all.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".avi", ".mpg", ".mpeg", ".m4v", ".3gp", ".wmv", ".3g2", ".mts", ".m2ts", ".mkv",
     ".webm", ".flv", ".ts"}
)  # fmt: skip
MAX_REPORTED_PROBLEMS = 5  # problems quoted per file in notes and errors


class AnnotationError(ValueError):
    """The file cannot be read as the format asked for. The message is one line: the file, what the
    format expects (`expected` starts with the format's name: "msrvtt_csv expects ...") and what was
    found; entry points print it and exit 2."""

    def __init__(self, path: Path | str, expected: str, found: str) -> None:
        self.path, self.expected, self.found = Path(path), expected, found
        super().__init__(" ".join(f"{path}: {expected}; found {found}".split()))


@dataclass(frozen=True, slots=True)
class Record:
    """One text. `video_id` is the name a video file is found by (its stem), `split` is set when the
    file says it, `start`/`end` are seconds within the video when the format has times."""

    video_id: str
    text: str
    split: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass
class Annotations:
    """What one reader got from one file (or folder): records plus an account of what it skipped."""

    path: Path
    format: str
    records: list[Record] = field(default_factory=list)
    rows: int = 0  # records read (rows, lines, annotations, cues) before filtering
    empty: int = 0  # records whose text was empty or whitespace only
    malformed: int = 0  # records that could not be parsed (short rows, bad JSON lines, non-string text)
    problems: list[str] = field(default_factory=list)  # the first few malformed records, located
    notes: list[str] = field(default_factory=list)  # facts about the reading (merged duplicates, ...)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    def add(self, video_id: str, text: object, where: str, **extra: object) -> None:
        """Count one record and keep it when its text is a non-empty string."""
        self.rows += 1
        if text is None:
            self.empty += 1
        elif not isinstance(text, str):
            self.problem(f"{where}: text is {type(text).__name__}, not a string")
        elif not text.strip():
            self.empty += 1
        else:
            self.records.append(Record(video_id, clean_text(text), **extra))  # type: ignore[arg-type]

    def problem(self, what: str, *, counted: bool = True) -> None:
        """Count one malformed record (its row already counted unless `counted` is False)."""
        if not counted:
            self.rows += 1
        self.malformed += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(what)


def clean_text(text: str) -> str:
    """Whitespace runs (newlines, tabs, leading spaces of published sentences) become one space."""
    return " ".join(text.split())


def video_key(name: str) -> str:
    """The id a video file is found by: the base name without a known video extension
    ("1010_MOVIE/1010_MOVIE_00.12.03.100-00.12.07.900.avi" -> "1010_MOVIE_00.12.03.100-00.12.07.900")."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    stem, dot, ext = base.rpartition(".")
    return stem if dot and stem and "." + ext.lower() in VIDEO_EXTENSIONS else base


def group_by_video(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records of each video, videos in first-appearance order, records in file order."""
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r.video_id, []).append(r)
    return out


def join_paragraph(sentences: Iterable[str]) -> str:
    """Sentences of one video joined with a single space, in annotation order (CLIP4Clip's join)."""
    return " ".join(s.strip() for s in sentences if s.strip())
