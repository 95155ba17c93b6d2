"""Generated text sources in the real published file formats, for tests, the benchmark and the demo.

Each source imitates the style of its dataset (ASR chatter, frame captions, stock-footage titles, COCO
captions, alt-texts, MSR-VTT and DiDeMo queries) from a seeded grammar, and is written in that
dataset's real format, so `write_sources(dir)` gives a registry `--all` can run on end to end.
The content is fake: NMI values on it say nothing about the real datasets.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_SUBJECTS = [
    "a man",
    "a woman",
    "a dog",
    "a group of people",
    "a child",
    "a cat",
    "two players",
    "a chef",
    "a girl",
    "a boy",
    "a crowd",
    "a car",
    "a horse",
    "a band",
    "a cyclist",
]
_ACTIONS = [
    "is cooking",
    "is running",
    "plays guitar",
    "is swimming",
    "is talking",
    "drives down a road",
    "is dancing",
    "rides a bike",
    "is singing",
    "jumps over a fence",
    "throws a ball",
    "is laughing",
]
_PLACES = [
    "in a kitchen",
    "on a beach",
    "in a park",
    "on a stage",
    "in the street",
    "at a stadium",
    "in a living room",
    "on a snowy mountain",
    "near a lake",
    "in a classroom",
]
_OBJECTS = [
    "a table with a laptop",
    "a plate of food",
    "a red bus",
    "a wooden bench",
    "a city skyline",
    "a bowl of fruit",
    "a tennis racket",
    "a white boat",
    "a large building",
    "a green field",
]
_FILLERS = ["um", "so", "you know", "like", "yeah", "okay", "right", "actually", "basically", "alright"]
_TALK = [
    "i think we should",
    "don't forget to subscribe and",
    "today we're going to",
    "let me show you how to",
    "and then we",
    "thank you guys for watching",
    "as i said before we",
    "this is really important so",
    "if you guys want to",
    "what's going on everybody we",
]
_TALK_END = [
    "talk about it",
    "check this out",
    "get started",
    "do that again",
    "see what happens",
    "move on",
    "hit the like button",
    "take a look",
    "figure it out",
    "wrap it up",
]
_STOCK = [
    "Aerial view of",
    "Close up of",
    "Slow motion shot of",
    "Timelapse of",
    "Young woman",
    "Businessman",
    "Happy family",
    "Drone footage of",
    "Beautiful",
    "Silhouette of",
]
_STOCK_END = [
    "at sunset",
    "in 4k",
    "on white background",
    "in slow motion",
    "in the office",
    "at night",
    "in autumn",
    "during summer vacation",
]
_ALT = [
    "actor attends the premiere of the film",
    "person arrives at the awards ceremony",
    "view from the hotel room",
    "football player celebrates scoring his team's first goal",
    "illustration of a vector icon",
    "the kitchen in our house",
    "a photo of the product",
    "wedding dress with lace",
    "map showing the location",
    "logo for the company",
]
_CAMERA = [
    "the camera zooms in",
    "the camera pans left",
    "first time we see",
    "the light turns on",
    "the screen goes black",
    "we see the sign for the first time",
]


def subtitle_like(rng: random.Random) -> str:
    return f"{rng.choice(_FILLERS)} {rng.choice(_TALK)} {rng.choice(_TALK_END)} {rng.choice(_FILLERS)}"


def frame_caption_like(rng: random.Random) -> str:  # OFA-style caption of a middle frame
    return f"{rng.choice(_SUBJECTS)} sitting next to {rng.choice(_OBJECTS)}"


def stock_title_like(rng: random.Random) -> str:  # WebVid
    return f"{rng.choice(_STOCK)} {rng.choice(_OBJECTS)[2:]} {rng.choice(_STOCK_END)}"


def coco_like(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS).capitalize()} standing near {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}."


def alt_text_like(rng: random.Random) -> str:  # Conceptual Captions
    return rng.choice(_ALT) + (
        f" in {rng.choice(['london', 'paris', 'new york', 'tokyo'])}" if rng.random() < 0.5 else ""
    )


def msrvtt_like(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)} {rng.choice(_PLACES)}"


def didemo_like(rng: random.Random) -> str:
    return rng.choice(_CAMERA) if rng.random() < 0.3 else f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)}"


STYLES: dict[str, Callable[[random.Random], str]] = {
    "hdvila_sub": subtitle_like,
    "hdvila_cap": frame_caption_like,
    "webvid": stock_title_like,
    "coco": coco_like,
    "cc12m": alt_text_like,
    "msrvtt": msrvtt_like,
    "didemo": didemo_like,
}


def generate(style: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"{style}-{seed}")
    return [STYLES[style](rng) for _ in range(n)]


def _vtt_time(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def youtube_vtt(lines: list[str], seed: int = 0, times: list[tuple[float, float]] | None = None) -> str:
    """A YouTube auto-caption WebVTT file showing `lines` (consecutive lines must differ): header with
    a Style block, rolling cues (the previous line repeated as plain text, the new line with word
    timestamp tags) and ~10 ms cues repeating the line just shown. Cleaned, it reads as `lines`.
    `times` places line i's cue at (start, end); by default the lines follow each other."""
    rng = random.Random(f"vtt-{seed}")
    out = [
        "WEBVTT",
        "Kind: captions",
        "Language: en",
        "Style:",
        "::cue(c.colorCCCCCC) { color: rgb(204,204,204);",
        " }",
        "##",
        "",
    ]
    t, prev = rng.uniform(0, 2), " "
    for i, line in enumerate(lines):
        words = line.split()
        dur = 0.3 * len(words) + rng.uniform(0.2, 1.0)
        if times is not None:
            t, dur = times[i][0], times[i][1] - times[i][0]
        tagged = words[0] + "".join(
            f"<{_vtt_time(t + dur * k / len(words))}><c> {w}</c>" for k, w in enumerate(words[1:], start=1)
        )
        out += [f"{_vtt_time(t)} --> {_vtt_time(t + dur)} align:start position:0%", prev, tagged, ""]
        t += dur
        out += [f"{_vtt_time(t)} --> {_vtt_time(t + 0.01)} align:start position:0%", line, " ", ""]
        t, prev = t + 0.01, line
    return "\n".join(out)


def srt(cues: list[tuple[float, float, str]], sloppy: bool = False) -> str:
    """An SRT file of (start, end, text) cues; `sloppy` writes seconds without padding (`00:00:5,000`)."""

    def stamp(x: float) -> str:
        h, m, sec, ms = int(x // 3600), int(x // 60 % 60), int(x % 60), round(x * 1000) % 1000
        return f"{h:02d}:{m:02d}:{sec if sloppy else f'{sec:02d}'},{ms:03d}"

    return "".join(
        f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, start=1)
    )


def write_sources(out_dir: Path, n: int = 1500, seed: int = 0) -> Path:
    """Write every Table 1 source (n texts each) in its real format plus `sources.toml`; returns the TOML."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = {name: generate(name, n, seed) for name in STYLES}
    with (out / "subtitles.jsonl").open("w", encoding="utf-8") as f:
        for i, s in enumerate(t["hdvila_sub"]):
            f.write(json.dumps({"clip_id": f"vid{i // 5:08d}abc.{i % 5}.mp4", "text": s}) + "\n")
    keys = [f"vid{i // 5:08d}abc_{i % 5}" for i in range(n)]
    pq.write_table(
        pa.table(
            {
                "key": keys,
                "clip_id": [k.replace("_", ".") + ".mp4" for k in keys],
                "caption": t["hdvila_cap"],
                "captioner": ["synthetic"] * n,
            }
        ),
        out / "captions.parquet",
    )
    with (out / "webvid.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "name", "page_idx", "page_dir", "duration", "contentUrl"])
        for i, s in enumerate(t["webvid"]):
            w.writerow(
                [1000000 + i, s, i // 50, "001001_001050", "PT00H00M17S", f"https://example.com/{i}.mp4"]
            )
    anns = [{"image_id": i // 5, "id": i, "caption": s} for i, s in enumerate(t["coco"])]
    (out / "captions_coco.json").write_text(
        json.dumps({"info": {}, "licenses": [], "images": [], "annotations": anns, "type": "captions"})
    )
    with (out / "cc12m.tsv").open("w", encoding="utf-8") as f:
        for i, s in enumerate(t["cc12m"]):
            f.write(f"https://example.com/img/{i}.jpg\t{s}\n")
    with (out / "MSRVTT_JSFUSION_test.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, s in enumerate(t["msrvtt"]):
            w.writerow([f"ret{i}", f"msr{7000 + i}", f"video{7000 + i}", s])
    didemo = [
        {
            "annotation_id": i,
            "description": s,
            "times": [[0, 1], [0, 0], [1, 1], [0, 1]],
            "video": f"{i // 4}@N00_{i // 4}_abc.mov",
            "num_segments": 6,
        }
        for i, s in enumerate(t["didemo"])
    ]
    (out / "test_data.json").write_text(json.dumps(didemo))
    toml = out / "sources.toml"
    toml.write_text(
        "# generated by synthetic.texts.write_sources (fake content, real formats)\n"
        '[sources.hdvila_sub]\nformat = "subtitles_jsonl"\npath = "subtitles.jsonl"\n'
        '[sources.hdvila_cap]\nformat = "captions_parquet"\npath = "captions.parquet"\n'
        '[sources.webvid]\nformat = "webvid_csv"\npath = "webvid.csv"\n'
        '[sources.coco]\nformat = "coco_json"\npath = "captions_coco.json"\n'
        '[sources.cc12m]\nformat = "cc_tsv"\npath = "cc12m.tsv"\n'
        '[sources.msrvtt]\nformat = "msrvtt_csv"\npath = "MSRVTT_JSFUSION_test.csv"\n'
        '[sources.didemo]\nformat = "didemo_json"\npath = "test_data.json"\n'
    )
    return toml


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m synthetic.texts",
        description="Write generated Table 1 sources (fake content, real formats) and their sources.toml.",
    )
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n", type=int, default=1500, help="texts per source")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(write_sources(args.out_dir, n=args.n, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
