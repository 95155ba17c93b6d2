"""Image-text sources: COCO captions json (and Karpathy's `dataset_coco.json`), CC3M / CC12M tsv."""

from __future__ import annotations

import itertools
from pathlib import Path

from pipeline.annotations.records import AnnotationError, Annotations
from pipeline.annotations.textfile import delimited_rows, describe, parse_json

URL_PROBE_ROWS = 200  # rows looked at to tell the URL column from the caption column


def read_coco_json(path: Path, fmt: str = "coco_json", split: str | None = None) -> Annotations:
    """`captions_*.json` (`annotations: [{image_id, id, caption}]`): one record per caption, the image
    id as video id; or Karpathy's `dataset_coco.json` (`images: [{split, sentences: [{raw}]}]`)."""
    expected = f"{fmt} expects COCO captions json with an 'annotations' list"
    doc = parse_json(path, expected)
    out = Annotations(path, fmt)
    if isinstance(doc, dict) and isinstance(doc.get("annotations"), list):
        for i, a in enumerate(doc["annotations"]):
            if not isinstance(a, dict):
                out.problem(f"annotation {i}: not an object", counted=False)
                continue
            out.add(str(a.get("image_id", "")), a.get("caption"), f"annotation {i}")
        return out
    images = doc.get("images") if isinstance(doc, dict) else None
    if isinstance(images, list) and images and isinstance(images[0], dict) and "sentences" in images[0]:
        for i, img in enumerate(images):
            if not isinstance(img, dict) or (split and img.get("split") != split):
                continue
            for j, s in enumerate(img.get("sentences") or []):
                text = s.get("raw") if isinstance(s, dict) else None
                out.add(
                    str(img.get("cocoid", img.get("filename", i))),
                    text,
                    f"image {i}[{j}]",
                    split=img.get("split"),
                )
        out.notes.append("Karpathy dataset_coco.json form" + (f", split {split}" if split else ""))
        return out
    raise AnnotationError(path, expected, describe(doc))


def _looks_like_url(s: str) -> bool:
    return s.strip().lower().startswith(("http://", "https://"))


def read_cc_tsv(path: Path, fmt: str = "cc_tsv", caption_column: int | None = None) -> Annotations:
    """Conceptual Captions tsv, no header, two columns. CC3M writes `caption<TAB>url`, CC12M
    `url<TAB>caption`: the URL column is detected (or given as `caption_column` = 0 | 1)."""
    expected = f"{fmt} expects two tab-separated columns (caption, url)"
    rows = delimited_rows(path, expected, "\t")
    head = list(itertools.islice(rows, URL_PROBE_ROWS))
    two = [r for _, r in head if len(r) == 2]
    if head and not two:
        raise AnnotationError(
            path, expected, f"first line with {len(head[0][1])} field(s): {head[0][1][:3]!r}"
        )
    out = Annotations(path, fmt)
    if caption_column is None:
        url_first = sum(_looks_like_url(r[0]) for r in two)
        url_second = sum(_looks_like_url(r[1]) for r in two)
        if two and max(url_first, url_second) < len(two) / 2:
            raise AnnotationError(path, expected, "no column of image URLs (set caption_column = 0 or 1)")
        caption_column = 1 if url_first > url_second else 0
        out.notes.append(f"caption column {caption_column} ({'CC12M' if caption_column else 'CC3M'} order)")
    for n, r in itertools.chain(head, rows):
        if len(r) != 2:
            out.problem(f"line {n}: {len(r)} field(s)", counted=False)
        elif n == 1 and {r[0].strip().lower(), r[1].strip().lower()} == {"caption", "url"}:
            out.notes.append("header line skipped")
        else:
            # no id kept: the URL would double the memory of a 12M-line file, and no stage needs it
            out.add("", r[caption_column], f"line {n}")
    return out
