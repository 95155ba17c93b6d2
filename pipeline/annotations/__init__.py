"""Annotation and subtitle files of every supported dataset, read into one kind of record.

Both stages read annotations only through this package: `analysis/sources.py` (the NMI) and the
trainer's retrieval data, and the pipeline's `--subtitles` folder of .vtt/.srt files. See
docs/ANALYSIS.md ("Formats") for the list with an example line of each.
"""

from pipeline.annotations.detect import detect_format
from pipeline.annotations.records import (
    VIDEO_EXTENSIONS,
    AnnotationError,
    Annotations,
    Record,
    clean_text,
    group_by_video,
    join_paragraph,
    video_key,
)
from pipeline.annotations.registry import FORMATS, ID_FORMATS, read_annotations, read_ids
from pipeline.annotations.subtitles import Cue, read_cues, subtitle_files, text_in_span

__all__ = [
    "FORMATS",
    "VIDEO_EXTENSIONS",
    "ID_FORMATS",
    "AnnotationError",
    "Annotations",
    "Cue",
    "Record",
    "clean_text",
    "detect_format",
    "group_by_video",
    "join_paragraph",
    "read_annotations",
    "read_cues",
    "read_ids",
    "subtitle_files",
    "text_in_span",
    "video_key",
]
