"""Reading annotation files as text the way real copies come: UTF-8 with or without a BOM, LF / CRLF /
CR line ends, a missing last newline, `,` or `;` (or tab) delimited, JSON or JSON lines. Every failure
is an `AnnotationError` naming the file, the format expected and what was found."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.annotations.records import AnnotationError

SNIFF_DELIMITERS = (",", ";", "\t", "|")


def _first_bytes(path: Path, n: int = 64) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(n)
    except IsADirectoryError:
        raise AnnotationError(path, "an annotation file is expected", "a directory") from None
    except FileNotFoundError:
        raise AnnotationError(path, "an annotation file is expected", "no such file") from None


def is_parquet(path: Path) -> bool:
    return _first_bytes(path, 4) == b"PAR1"


def starts_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def refuse_parquet(path: Path, expected: str) -> None:
    if is_parquet(path):
        fmt = expected.split(" ", 1)[0]
        raise AnnotationError(path, expected, f"a Parquet file, not {fmt} text")


def read_text(path: Path, expected: str) -> str:
    """The whole file as text with newlines normalised to LF."""
    refuse_parquet(path, expected)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(
            path, expected, f"bytes that are not UTF-8 at byte {e.start} ({raw[e.start : e.start + 4]!r})"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def iter_lines(path: Path, expected: str) -> Iterator[str]:
    """Lines without their endings, streamed (CC12M- or HD-VILA-sized line files)."""
    refuse_parquet(path, expected)
    lineno = 0
    try:
        with path.open("r", encoding="utf-8-sig", newline=None) as f:
            for line in f:
                lineno += 1
                yield line.rstrip("\n")
    except UnicodeDecodeError as e:
        # the decoder reads ahead in blocks, so only the block's position is known
        raise AnnotationError(
            path, expected, f"bytes that are not UTF-8 in the block read after line {lineno} ({e.reason})"
        ) from None


def shown(text: str, n: int = 60) -> str:
    """The start of a text, quoted on one line, for error messages."""
    return repr(text.lstrip()[:n].replace("\n", "\\n"))


def parse_json(path: Path, expected: str) -> Any:
    text = read_text(path, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(
            path, expected, f"text that is not valid JSON ({e.msg} at line {e.lineno}) starting {shown(text)}"
        ) from None


def describe(doc: Any) -> str:
    """What a parsed JSON document is, for error messages."""
    if isinstance(doc, dict):
        return f"an object with keys {list(doc)[:8]!r}"
    if isinstance(doc, list):
        if doc and isinstance(doc[0], dict):
            return f"a list of objects with keys {list(doc[0])[:8]!r}"
        return f"a list of {type(doc[0]).__name__ if doc else 'nothing'}"
    return f"a JSON {type(doc).__name__}"


def headed_csv(
    path: Path, expected: str, columns: tuple[str, ...], delimiter: str | None = None
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Header and (line number, row) pairs of a headed CSV whose header holds every name in `columns`.

    The delimiter is `delimiter` or the first of `SNIFF_DELIMITERS` whose header has the columns (the
    published MSR-VTT copies use both `,` and `;`). A JSON file is refused, never parsed as CSV."""
    text = read_text(path, expected)
    if starts_like_json(text):
        raise AnnotationError(path, expected, f"JSON ({shown(text)})")
    first_line = text.split("\n", 1)[0]
    candidates = (delimiter,) if delimiter else SNIFF_DELIMITERS
    for delim in candidates:
        header = [h.strip() for h in next(csv.reader([first_line], delimiter=delim), [])]
        if all(c in header for c in columns):
            rows = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
            next(rows)
            return header, ((n, r) for n, r in enumerate(rows, start=2) if r and any(c.strip() for c in r))
    found = next(csv.reader([first_line], delimiter=delimiter or ","), [])
    raise AnnotationError(
        path,
        f"{expected} with a header holding {list(columns)!r} (delimiters tried: {list(candidates)})",
        f"header {found[:8]!r}",
    )


def delimited_rows(path: Path, expected: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a header-less delimited file, streamed, no CSV quoting (alt-texts and
    LSMDC sentences hold unbalanced quotes); blank lines are skipped."""
    first = True
    for n, line in enumerate(iter_lines(path, expected), start=1):
        if first and starts_like_json(line):
            raise AnnotationError(path, expected, f"JSON ({shown(line)})")
        first = False
        if line.strip():
            yield n, line.split(delimiter)
