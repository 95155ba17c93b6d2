"""The caption gallery: one self-contained static HTML page (no server, no network, no script) with
the numbers table and figures on top, then a sample of clips, one row each: middle frame, subtitle,
references and every captioner's caption side by side.

Images are inline `data:` URIs, so the page can be mailed or opened from anywhere. Every text that
comes from the data (clip ids, subtitles, captions, model ids) goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.atomic import write_bytes_atomic

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: .2em; }
.banner { background: #fff3cd; border: 1px solid #e0b000; padding: .5em .8em; font-weight: bold; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f2f2f2; }
table.numbers { font-size: .9em; }
table.numbers td { font-variant-numeric: tabular-nums; }
table.numbers td.wide { min-width: 14em; }
table.clips td.frame img { width: 224px; height: auto; display: block; }
table.clips td.text { max-width: 22em; }
.missing { color: #a00; font-style: italic; }
.empty { color: #888; font-style: italic; }
.id { font-family: monospace; font-size: .85em; word-break: break-all; max-width: 12em; }
figure { margin: .8em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; }
"""


@dataclass
class GalleryClip:
    clip_id: str
    frame: bytes | None  # JPEG bytes of the middle frame; None when no run had it
    subtitle: str | None
    captions: dict[str, str]  # captioner label -> caption
    refs: list[str] = field(default_factory=list)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _text_cell(text: str | None, missing: str) -> str:
    if text is None:
        return f'<td class="text"><span class="missing">{missing}</span></td>'
    if not text.strip():
        return '<td class="text"><span class="empty">(empty)</span></td>'
    return f'<td class="text">{html.escape(text)}</td>'


def _numbers(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = [
        '<table class="numbers">',
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>",
    ]
    for row in rows:  # long cells (model ids, the machine) wrap; numbers stay on one line
        cells = [
            f'<td class="wide">{html.escape(c)}</td>' if len(c) > 24 else f"<td>{html.escape(c)}</td>"
            for c in row
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return out + ["</table>"]


@dataclass
class GalleryPage:
    title: str
    banner: str  # the untrained-model warning ("" when none applies)
    numbers: tuple[Sequence[str], Sequence[Sequence[str]]]  # header, one row per captioner
    report: Sequence[str]  # the printed report, folded under the table
    figures: Sequence[tuple[str, bytes]]  # (caption, PNG bytes)
    clips: Sequence[GalleryClip]
    labels: Sequence[str]  # the caption columns, in order
    names: dict[str, str] = field(default_factory=dict)  # their headers (default: the labels)


def render(page: GalleryPage) -> str:
    """The page as one HTML string."""
    title, banner, clips, labels, names = page.title, page.banner, page.clips, page.labels, page.names
    show_refs = any(c.refs for c in clips)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if banner:
        parts.append(f'<p class="banner">{html.escape(banner)}</p>')
    parts += _numbers(*page.numbers)
    report = html.escape("\n".join(page.report))
    parts.append(f"<details><summary>full report</summary><pre>{report}</pre></details>")
    for caption, png in page.figures:
        parts.append(
            f'<figure><img src="{data_uri(png, "image/png")}" alt="{html.escape(caption, quote=True)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append(f"<h2>{len(clips)} clips</h2>")
    parts.append('<table class="clips"><tr><th>middle frame</th><th>clip</th><th>subtitle</th>')
    if show_refs:
        parts.append("<th>references</th>")
    parts.append("".join(f"<th>{html.escape(names.get(label, label))}</th>" for label in labels) + "</tr>")
    for c in clips:
        row = [f'<tr id="clip-{html.escape(c.clip_id, quote=True)}">']
        if c.frame is None:
            row.append('<td class="frame"><span class="missing">no frame in the shards</span></td>')
        else:
            alt = html.escape(f"middle frame of {c.clip_id}", quote=True)
            row.append(f'<td class="frame"><img src="{data_uri(c.frame, "image/jpeg")}" alt="{alt}"></td>')
        row.append(f'<td class="id">{html.escape(c.clip_id)}</td>')
        row.append(_text_cell(c.subtitle, "no subtitle"))
        if show_refs:
            row.append(_text_cell(" | ".join(c.refs) if c.refs else None, "no reference"))
        row += [_text_cell(c.captions.get(label), "not captioned") for label in labels]
        parts.append("".join(row) + "</tr>")
    parts += ["</table>", "</body></html>", ""]
    return "\n".join(parts)


def write_gallery(path: Path, page: GalleryPage) -> Path:
    write_bytes_atomic(Path(path), render(page).encode("utf-8"))
    return Path(path)
