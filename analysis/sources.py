"""Text sources for the NMI domain-gap analysis: a TOML registry over the annotation layer.

Registry (paths are relative to the TOML file's directory)::

    [sources.msrvtt]
    format = "msrvtt_csv"
    path = "data/msrvtt/MSRVTT_JSFUSION_test.csv"

    [sources.didemo]
    format = "didemo_json"
    path = "data/didemo/test_data.json"
    mode = "paragraph"          # option of every format with video ids: sentence (default) | paragraph

    [sources.youtube]
    format = "subtitle_folder"  # a folder of per-video .vtt/.srt files is one source
    path = "data/youtube_subs"

Files are read by `pipeline.annotations` (every format, its options and an example line: docs/ANALYSIS.md).
A `LoadedSource` holds the texts (cleaned, non-empty, in file order, duplicates kept because the paper
samples from the data as it is) and counts of what was skipped and why. A file that does not look like
its declared format raises `SourceFormatError` naming the file, the format and what was found.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.annotations import FORMATS, AnnotationError, group_by_video, join_paragraph, read_annotations

SourceFormatError = AnnotationError  # the registry's errors and the layer's are one type: one line, exit 2
MODES = ("sentence", "paragraph")
PATH_OPTIONS = ("ids",)  # options naming a file, resolved like `path`
# Formats whose records name videos with several texts each: they take `mode = "paragraph"`.
PARAGRAPH_FORMATS = frozenset(
    {"msrvtt_csv", "msrvtt_json", "caption_list_json", "didemo_json", "lsmdc_tsv", "lsmdc_json",
     "activitynet_json", "youcook2_json", "msvd_json", "webvtt", "srt", "subtitle_folder"}
)  # fmt: skip


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
    rows: int = 0  # records read (rows, lines, annotations, cues) before filtering
    empty: int = 0  # records whose text was empty or whitespace only
    malformed: int = 0  # records that could not be parsed (short rows, bad JSON lines, non-string text)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = (
            f"{self.spec.name}: {len(self.texts)} texts from {self.spec.path} ({self.spec.format}); "
            f"{self.rows} records, {self.empty} empty skipped, {self.malformed} malformed skipped"
        )
        return s + "".join(f"\n  note: {n}" for n in self.notes)


def allowed_options(fmt: str) -> set[str]:
    return set(FORMATS[fmt].options) | ({"mode"} if fmt in PARAGRAPH_FORMATS else set())


def load_registry(toml_path: Path) -> dict[str, SourceSpec]:
    """Parse a sources TOML file; relative paths resolve against the TOML file's directory."""
    toml_path = Path(toml_path)
    try:
        with toml_path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise SourceFormatError(toml_path, "a sources registry TOML file", "no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise SourceFormatError(
            toml_path, "a sources registry", f"text that is not valid TOML: {e}"
        ) from None
    table = doc.get("sources")
    if not isinstance(table, dict) or not table:
        raise SourceFormatError(toml_path, "a sources registry with [sources.NAME] tables", "none")
    base = toml_path.resolve().parent
    specs: dict[str, SourceSpec] = {}
    for name, entry in table.items():
        where = f"[sources.{name}]"
        if not isinstance(entry, dict):
            raise SourceFormatError(toml_path, f"{where} to be a table", type(entry).__name__)
        fmt, path = entry.get("format"), entry.get("path")
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise SourceFormatError(
                toml_path, f"{where} format is one of {sorted(FORMATS)}", f"format {fmt!r} is not one of them"
            )
        if not isinstance(path, str) or not path:
            raise SourceFormatError(toml_path, f"{where} needs a path", "none")
        options = {k: v for k, v in entry.items() if k not in ("format", "path")}
        unknown = set(options) - allowed_options(fmt)
        if unknown:
            raise SourceFormatError(
                toml_path,
                f"{where} format {fmt} takes options {sorted(allowed_options(fmt))}",
                f"unknown option(s) {sorted(unknown)}",
            )
        if options.get("mode", "sentence") not in MODES:
            raise SourceFormatError(toml_path, f"{where} mode is one of {list(MODES)}", repr(options["mode"]))
        for k in PATH_OPTIONS:
            if isinstance(options.get(k), str):
                options[k] = str(_resolve(base, options[k]))
        specs[name] = SourceSpec(name=name, format=fmt, path=_resolve(base, path), options=options)
    return specs


def _resolve(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(base / p))  # "a/../data" -> "data"


def load_source(spec: SourceSpec) -> LoadedSource:
    """Load one source's texts through the annotation layer; `mode = "paragraph"` joins each video's
    texts with a space (CLIP4Clip's paragraph retrieval), one text per video."""
    if not spec.path.exists():
        raise FileNotFoundError(f"source {spec.name}: file {spec.path} does not exist")
    options = dict(spec.options)
    mode = options.pop("mode", "sentence")
    if mode not in MODES:
        raise SourceFormatError(spec.path, f"source {spec.name} mode is one of {list(MODES)}", repr(mode))
    ann = read_annotations(spec.path, spec.format, **options)
    out = LoadedSource(spec, ann.texts, ann.rows, ann.empty, ann.malformed, list(ann.notes))
    if mode == "paragraph":
        videos = group_by_video(ann.records)
        if "" in videos:
            raise SourceFormatError(
                spec.path,
                f"mode paragraph needs a video id on every {spec.format} record",
                "records without one",
            )
        out.texts = [join_paragraph(r.text for r in recs) for recs in videos.values()]
        out.notes.append(f"paragraph mode: {len(videos)} videos")
    if ann.malformed:
        out.notes.append(f"{ann.malformed} malformed record(s) skipped")
    if ann.problems:
        out.notes.append("first problems: " + "; ".join(ann.problems))
    return out
