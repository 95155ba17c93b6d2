"""Checks of an extraction's inputs before any work or write (`pipeline extract` and the Ray job).

A wrong `--videos` root used to give a run in which every clip failed with "video file not found"
and a plan.json pinned to the wrong path; now the command is refused in one line instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import UserError, existing_dir, output_dir
from pipeline.extract import resolve_video
from pipeline.metadata import expand_metadata, iter_clips


def check_extract_inputs(
    metadata: Sequence[str], videos: str | Path, layout: str, out: str | Path, subtitles: str | Path | None
) -> None:
    """UserError (one line) unless the inputs can make a run; reads metadata, writes nothing.

    The metadata patterns must resolve to files, `--subtitles` (if given) must exist (file or folder), `--out` must
    be a directory or creatable, and `--videos` a directory holding at least one video that the
    metadata names (the scan stops at the first one found).
    """
    try:
        expand_metadata(list(metadata))
    except FileNotFoundError as e:
        raise UserError(f"--metadata: {e}") from None
    if subtitles is not None and not Path(subtitles).exists():  # a file, or a folder of .vtt/.srt
        raise UserError(f"--subtitles not found: {subtitles}")
    output_dir(out)
    root = existing_dir(videos, "--videos")
    looked: set[str] = set()
    rows = bad = 0
    first_error = ""
    for row in iter_clips(list(metadata)):
        rows += 1
        if row.error is not None:
            bad += 1
            first_error = first_error or row.error
            continue
        group = row.video_id if layout == "full" else f"{row.video_id}/{row.clip_id}"
        if group in looked:
            continue
        if resolve_video(root, row, layout) is not None:
            return
        looked.add(group)
    if not looked:
        why = f"; the first: {first_error}" if first_error else ""
        raise UserError(f"--metadata names no usable clip ({rows} clips, {bad} with errors{why})")
    example = sorted(looked)[0]
    where = (
        f"{root}/<video_id>.mp4 (or another extension)"
        if layout == "full"
        else f"{root}/<video_id>/<clip_id>"
    )
    raise UserError(
        f"--videos {root}: none of the {len(looked)} videos the metadata names is there "
        f"(looked for {where}, e.g. {example}; --layout {layout})"
    )
