"""Every annotation format by name: its reader, its options, what it looks like (one example line).

`read_annotations(path)` detects the format; `read_annotations(path, "msrvtt_csv")` insists on one.
Id lists (`read_ids`) name videos without texts: MSR-VTT's 9k/7k csv, MSVD's split lists, ActivityNet's
id json."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.annotations.captionlist import LIST_FORM, read_caption_list
from pipeline.annotations.dense import read_dense_json, read_id_json
from pipeline.annotations.detect import detect_format
from pipeline.annotations.didemo import read_didemo_json
from pipeline.annotations.hdvila import read_captions_parquet, read_subtitles_jsonl, read_text_lines
from pipeline.annotations.images import read_cc_tsv, read_coco_json
from pipeline.annotations.lsmdc import read_lsmdc_json, read_lsmdc_tsv
from pipeline.annotations.msrvtt import read_msrvtt_csv, read_msrvtt_ids, read_msrvtt_json
from pipeline.annotations.msvd import read_id_list, read_msvd_json
from pipeline.annotations.records import AnnotationError, Annotations
from pipeline.annotations.subtitles import read_subtitles
from pipeline.annotations.textfile import parse_json
from pipeline.annotations.webvid import read_webvid_csv


@dataclass(frozen=True)
class Format:
    reader: Callable[..., Annotations]
    options: frozenset[str]
    example: str  # one made-up line of the format, for docs and error messages


def _caption_list_json(path: Path, fmt: str) -> Annotations:
    expected = f"{fmt} expects {LIST_FORM}"
    return read_caption_list(parse_json(path, expected), path, fmt, expected)


FORMATS: dict[str, Format] = {
    "msrvtt_csv": Format(read_msrvtt_csv, frozenset({"column", "delimiter"}), "ret0,msr9001,video9001,a man is slicing a red pepper"),
    "msrvtt_json": Format(read_msrvtt_json, frozenset({"split"}), '{"videos": [{"video_id": "video0", "split": "train"}], "sentences": [{"video_id": "video0", "caption": "a cartoon plays"}]}'),
    "caption_list_json": Format(_caption_list_json, frozenset(), '[{"video": "video9001.mp4", "caption": ["a man cooks", "someone cooks"]}]'),
    "didemo_json": Format(read_didemo_json, frozenset(), '[{"video": "1234@N00_56_ab.mov", "description": "the dog jumps", "times": [[0, 1]], "dl_link": "https://..."}]'),
    "lsmdc_tsv": Format(read_lsmdc_tsv, frozenset(), "1010_MOVIE_00.12.03.100-00.12.07.900\t00.12.03.100\t00.12.07.900\t00.12.03.100\t00.12.07.900\tSOMEONE opens the door."),
    "lsmdc_json": Format(read_lsmdc_json, frozenset(), '[{"video": "1010_MOVIE/1010_MOVIE_00.12.03.100-00.12.07.900.avi", "caption": "SOMEONE opens the door."}]'),
    "activitynet_json": Format(read_dense_json, frozenset({"ids"}), '{"v_AbCdEfGhIjK": {"duration": 55.2, "timestamps": [[0.3, 55.2]], "sentences": ["A man lifts a bar."]}}'),
    "youcook2_json": Format(read_dense_json, frozenset({"ids"}), '{"xHr8X2Wpmno": {"duration": 300.0, "timestamps": [[41.0, 54.0]], "sentences": ["add oil to a pan"]}}'),
    "msvd_json": Format(read_msvd_json, frozenset({"ids"}), '{"AbCdEfGhIjK_5_15": ["a squirrel eats a nut", "an animal eats"]}'),
    "coco_json": Format(read_coco_json, frozenset({"split"}), '{"images": [...], "annotations": [{"image_id": 1, "id": 7, "caption": "A cat on a sofa."}]}'),
    "cc_tsv": Format(read_cc_tsv, frozenset({"caption_column"}), "a dog runs along the beach\thttps://example.com/1.jpg"),
    "webvid_csv": Format(read_webvid_csv, frozenset({"column", "delimiter"}), "1066,Aerial view of a forest,12,001001_001050,PT00H00M17S,https://example.com/1066.mp4"),
    "subtitles_jsonl": Format(read_subtitles_jsonl, frozenset({"field"}), '{"clip_id": "AbCdEfGhIjK.3.mp4", "text": "so today we are going to"}'),
    "captions_parquet": Format(read_captions_parquet, frozenset({"column"}), "key=AbCdEfGhIjK_3, clip_id=AbCdEfGhIjK.3.mp4, caption='a man sitting at a desk', captioner=ofa"),
    "webvtt": Format(read_subtitles, frozenset({"unit"}), "00:05:04.080 --> 00:05:05.069 align:start position:0%"),
    "srt": Format(read_subtitles, frozenset({"unit"}), "00:00:01,000 --> 00:00:04,000"),
    "subtitle_folder": Format(read_subtitles, frozenset({"unit"}), "subs/AbCdEfGhIjK.en.vtt, subs/ZyXwVuTsRqP.srt"),
    "text_lines": Format(read_text_lines, frozenset(), "one text per line"),
}  # fmt: skip

# Id lists: video names without texts.
ID_FORMATS: dict[str, Callable[[Path, str], list[str]]] = {
    "msrvtt_ids": read_msrvtt_ids,
    "id_list": read_id_list,
    "id_json": read_id_json,
}


OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "column": str, "delimiter": str, "split": str, "field": str, "unit": str, "caption_column": int,
    "ids": (str, Path, list),
}  # fmt: skip
OPTION_HELP = {
    "column": "a column name", "delimiter": "one character", "split": "a split name", "field": "a field name",
    "unit": "'segment', 'cue' or 'file'", "caption_column": "0 or 1", "ids": "an id list file or a list of ids",
}  # fmt: skip


def known(names: dict[str, Any]) -> str:
    return ", ".join(sorted(names))


def read_ids(path: Path, fmt: str | None = None) -> list[str]:
    """Video ids of an id list (MSR-VTT `video_id` csv, one-name-per-line txt, json list), in order."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in ID_FORMATS:
        raise AnnotationError(path, f"an id list ({known(ID_FORMATS)})", f"format {fmt}")
    return ID_FORMATS[fmt](path, fmt)


def read_annotations(path: Path, fmt: str | None = None, **options: Any) -> Annotations:
    """Records of one annotation file (or subtitle folder) in format `fmt` (detected when None).

    Options are the format's (`FORMATS[fmt].options`); `ids` may be a list or the path of an id list."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(path, f"{fmt or 'an annotation file'} expects a file", "no such file or folder")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise AnnotationError(path, f"a format name, one of: {known(FORMATS)}", repr(fmt))
    unknown = sorted(set(options) - FORMATS[fmt].options)
    if unknown:
        allowed = sorted(FORMATS[fmt].options) or "none"
        raise AnnotationError(path, f"{fmt} takes options {allowed}", f"unknown option(s) {unknown}")
    for k, v in options.items():
        if not isinstance(v, OPTION_TYPES[k]) or (k == "caption_column" and v not in (0, 1)):
            raise AnnotationError(path, f"{fmt} option {k} is {OPTION_HELP[k]}", repr(v))
    if isinstance(options.get("ids"), str | Path):
        options["ids"] = read_ids(Path(options["ids"]))
    if path.is_dir() and fmt != "subtitle_folder":
        raise AnnotationError(path, f"{fmt} expects a file", "a folder")
    return FORMATS[fmt].reader(path, fmt, **options)
