"""WebVTT / SRT reading: each cleaning rule line by line, YouTube rolling captions, broadcast files,
sloppy SRT, folders, cutting by clip span, and the pipeline's --subtitles folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.annotations import AnnotationError, read_annotations, read_cues, text_in_span
from pipeline.annotations.subtitles import Cue, clean_line, collapse, parse_time, segments
from pipeline.extract import ExtractArgs, run_extract
from pipeline.metadata import open_subtitles
from pipeline.plan import ExtractOptions
from synthetic.texts import generate, srt, youtube_vtt

# The YouTube example of the published format description, verbatim in structure: the second cue
# follows the first without a blank line, the first cue's new word sits in a colour tag.
YOUTUBE = (
    "WEBVTT\nKind: captions\nLanguage: en\nStyle:\n::cue(c.colorCCCCCC) { color: rgb(204,204,204);\n }\n##\n\n"
    "00:04:46.470 --> 00:05:04.080 align:start position:0%\nwe went\n<c.colorCCCCCC>down</c>\n"
    "00:05:04.080 --> 00:05:05.069 align:start position:0%\n"
    "down<00:05:04.199><c> to</c><00:05:04.379><c> the</c><00:05:04.620><c> river</c>\n\n"
    "00:05:05.069 --> 00:05:05.400 align:start position:0%\ndown to the river\n"
)

BROADCAST = (
    "WEBVTT - Episode 1\n\n"
    "NOTE This file was made by hand\nand the note spans two lines\n\n"
    "STYLE\n::cue { color: yellow }\n\n"
    "1\n00:00:01.000 --> 00:00:03.500 position:50.00%,middle align:middle size:80.00% line:84.67%\n"
    "[Ana] <i>Where were you</i>\nlast night?\n   \n"
    "2\n00:00:04.000 --> 00:00:06.000\n- I was <b>home</b> &amp; asleep.\n\n"
    "NOTE another note\n\n"
    "3\n00:00:06.500 --> 00:00:07.000\n[Music]\n\n"
    "4\n00:00:07.000 --> 00:00:09.000 line:0\n<v Ben>Sure you were.</v>"  # no trailing newline
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("down<00:05:04.199><c> to</c><00:05:04.379><c> the</c>", "down to the"),  # word timing tags
        ("<c.colorCCCCCC>down</c>", "down"),  # class tags
        ("<i>Where</i> <b>were</b> <u>you</u>", "Where were you"),  # style tags
        ("<v Ben>Sure you were.</v>", "Sure you were."),  # voice tag
        ('<font color="#ffff00">yellow</font>', "yellow"),  # SRT font tag
        (r"{\an8}top line", "top line"),  # ASS override
        ("fish &amp; chips&nbsp;now &lt;3", "fish & chips now <3"),  # entities
        ("[Ana] where were you", "where were you"),  # speaker label
        ("[Music]", ""),  # sound label: nothing left, line dropped
        (">> so anyway", "so anyway"),  # speaker change
        ("- I was home.", "I was home."),  # dialogue dash
        ("well-known  spaces\t here ", "well-known spaces here"),  # inner dash kept, whitespace collapsed
        ("   ", ""),
    ],
)
def test_clean_line_rules(raw: str, clean: str) -> None:
    assert clean_line(raw) == clean


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:01:02.500", 62.5),
        ("00:01:02,500", 62.5),
        ("01:02.5", 62.5),  # WebVTT without hours; one fraction digit is tenths
        ("00:00:5,000", 5.0),  # sloppy SRT
        ("1:2:3,4", 3723.4),
        ("100:00:00.000", 360000.0),
    ],
)
def test_parse_time_lenient(text: str, seconds: float) -> None:
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["00:00:61.000", "5 seconds", "00:61:00.000", ""])
def test_parse_time_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_time(bad)


def test_rolling_collapse_rule() -> None:
    cues = collapse(
        [
            (0.0, 1.0, ["we went", "<c.colorCCCCCC>down</c>"]),
            (1.0, 2.0, ["down<00:00:01.100><c> to</c><c> the</c><c> river</c>"]),  # grows "down"
            (2.0, 2.01, ["down to the river", " "]),  # repeat
            (2.01, 3.0, ["down to the river", "and<00:00:02.5><c> back</c>"]),  # repeat + new line
        ]
    )
    assert cues == [
        Cue(0.0, 1.0, "we went down"),
        Cue(1.0, 2.0, "to the river", continues=True),
        Cue(2.01, 3.0, "and back"),
    ]
    assert [s.text for s in segments(cues)] == ["we went down to the river", "and back"]
    # a word shared by chance is not growth: growth needs the whole previous line first
    assert [c.text for c in collapse([(0, 1, ["go down"]), (1, 2, ["downtown now"])])] == [
        "go down",
        "downtown now",
    ]


def test_youtube_example_reads_as_words_spoken_once(tmp_path: Path) -> None:
    p = tmp_path / "AbCdEfGhIjK.en.vtt"
    p.write_bytes(("\ufeff" + YOUTUBE).replace("\n", "\r\n").encode())  # BOM and CRLF as in real copies
    ann = read_annotations(p)
    assert ann.format == "webvtt"
    assert ann.texts == ["we went down to the river"]
    r = ann.records[0]
    assert (r.video_id, r.start, r.end) == ("AbCdEfGhIjK", 286.47, 305.069)
    cues = read_cues(p)[0]
    assert " ".join(c.text for c in cues) == "we went down to the river"


def test_broadcast_vtt_notes_ids_settings_labels(tmp_path: Path) -> None:
    p = tmp_path / "ep1.vtt"
    p.write_text(BROADCAST, encoding="utf-8")
    ann = read_annotations(p, "webvtt")
    assert ann.texts == ["Where were you last night?", "I was home & asleep.", "Sure you were."]
    assert [(r.start, r.end) for r in ann.records] == [(1.0, 3.5), (4.0, 6.0), (7.0, 9.0)]
    per_file = read_annotations(p, "webvtt", unit="file")
    assert per_file.texts == ["Where were you last night? I was home & asleep. Sure you were."]


def test_srt_sloppy_times_and_tags(tmp_path: Path) -> None:
    body = srt([(1.0, 4.0, "<i>Hello</i> there,\ngeneral."), (5.0, 6.5, "{\\an8}Run!")], sloppy=True)
    assert "00:00:5,000" in body
    p = tmp_path / "movie.srt"
    p.write_bytes(body.rstrip("\n").replace("\n", "\r\n").encode())  # CRLF, no trailing newline
    ann = read_annotations(p)
    assert ann.format == "srt"
    assert ann.texts == ["Hello there, general.", "Run!"]
    assert [(r.start, r.end) for r in ann.records] == [(1.0, 4.0), (5.0, 6.5)]
    # a cue with an unreadable time is skipped and counted, the rest is read
    p.write_text(
        "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:xx --> 00:00:03,000\nbad\n", encoding="utf-8"
    )
    ann = read_annotations(p)
    assert ann.texts == ["ok"] and ann.malformed == 1 and "bad timestamp" in ann.problems[0]


def test_text_in_span_cue_level() -> None:
    cues = [Cue(0, 2, "a"), Cue(2, 4, "b"), Cue(4, 6, "c")]
    assert text_in_span(cues, 0, 2) == "a"
    assert text_in_span(cues, 1.5, 4.5) == "a b c"  # every cue overlapping the span
    assert text_in_span(cues, 6, 8) == ""


def test_generated_youtube_vtt_equals_hand_cleaned(tmp_path: Path) -> None:
    lines = list(dict.fromkeys(generate("hdvila_sub", 60, seed=3)))
    p = tmp_path / "vid.vtt"
    p.write_text(youtube_vtt(lines, seed=3), encoding="utf-8")
    assert read_annotations(p).texts == lines


@pytest.mark.parametrize(
    ("name", "body", "found"),
    [
        ("a.vtt", "1\n00:00:01,000 --> 00:00:02,000\nhi\n", "first line '1'"),
        ("b.vtt", "WEBVTT\n\nno cues at all\n", "no cue"),
        ("c.srt", "just text\n", "no cue"),
        ("d.vtt", '{"clip_id": "a", "text": "b"}\n', "first line"),
    ],
)
def test_bad_subtitle_files_one_line(tmp_path: Path, name: str, body: str, found: str) -> None:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    with pytest.raises(AnnotationError, match=found) as e:
        read_annotations(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_folder_is_one_source(tmp_path: Path) -> None:
    d = tmp_path / "subs"
    (d / "nested").mkdir(parents=True)
    (d / "vidA.en.vtt").write_text(YOUTUBE, encoding="utf-8")
    (d / "nested" / "vidB.srt").write_text(srt([(0, 1, "one"), (1, 2, "two")]), encoding="utf-8")
    (d / "notes.txt").write_text("ignored", encoding="utf-8")
    ann = read_annotations(d)
    assert ann.format == "subtitle_folder"
    assert [(r.video_id, r.text) for r in ann.records] == [  # files in sorted path order
        ("vidB", "one"),
        ("vidB", "two"),
        ("vidA", "we went down to the river"),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="folder without .vtt/.srt"):
        read_annotations(tmp_path / "empty")


def test_pipeline_subtitles_folder_cut_by_clip_span(tmp_path: Path) -> None:
    d = tmp_path / "subs"
    d.mkdir()
    (d / "vidA.vtt").write_text(YOUTUBE, encoding="utf-8")
    (d / "vidB.srt").write_text(srt([(0, 5, "first words"), (5, 10, "second words")]), encoding="utf-8")
    (d / "vidC.vtt").write_text("not a vtt\n", encoding="utf-8")
    meta = tmp_path / "meta.jsonl"
    clips = {
        "vidA": [["00:04:40.000", "00:05:04.100"], ["00:05:04.100", "00:05:10.000"]],
        "vidB": [
            ["00:00:00.000", "00:00:04.000"],
            ["00:00:04.000", "00:00:08.000"],
            ["00:00:20.000", "00:00:21.000"],
        ],
        "vidC": [["00:00:00.000", "00:00:01.000"]],
        "vidD": [["00:00:00.000", "00:00:01.000"]],
    }
    meta.write_text(
        "\n".join(
            json.dumps(
                {"video_id": v, "clip": [{"clip_id": f"{v}.{i}.mp4", "span": s} for i, s in enumerate(spans)]}
            )
            for v, spans in clips.items()
        ),
        encoding="utf-8",
    )
    store, bad = open_subtitles(d, tmp_path / "idx", [str(meta)])
    assert bad == 1  # vidC's file is not WebVTT
    assert dict(store) == {
        "vidA.0.mp4": "we went down to the river",  # the 04:46-05:04 cue and the one starting 05:04.08
        "vidA.1.mp4": "to the river",
        "vidB.0.mp4": "first words",
        "vidB.1.mp4": "first words second words",
        "vidB.2.mp4": "",
    }
    assert store.get("vidD.0.mp4") is None  # no subtitle file: no subtitle, as with a jsonl without it
    again, _ = open_subtitles(d, tmp_path / "idx", [str(meta)])
    assert again.db_path == store.db_path  # the index is reused
    with pytest.raises(ValueError, match="metadata"):
        open_subtitles(d, tmp_path / "idx")


def test_extract_with_a_subtitles_folder(synthetic_corpus, tmp_path: Path) -> None:
    """`python -m pipeline extract --subtitles DIR`: each clip's shard row holds its span's cues."""
    rows = [json.loads(ln) for ln in Path(synthetic_corpus.metadata).read_text().splitlines() if ln.strip()]
    subs = tmp_path / "subs"
    subs.mkdir()
    expected: dict[str, str] = {}
    for k, video in enumerate(rows):
        spans = [(parse_time(c["span"][0]), parse_time(c["span"][1])) for c in video["clip"]]
        # one 1 s cue in the middle of every clip (its rolling repeat cue 10 ms later, still inside)
        cues = [
            ((a + b) / 2 - 0.5, (a + b) / 2 + 0.5, f"words of clip {k} {i}") for i, (a, b) in enumerate(spans)
        ]
        vtt = youtube_vtt([t for _, _, t in cues], seed=k, times=[(a, b) for a, b, _ in cues])
        (subs / f"{video['video_id']}.{'srt' if k % 2 else 'en.vtt'}").write_text(srt(cues) if k % 2 else vtt)
        expected.update({c["clip_id"]: f"words of clip {k} {i}" for i, c in enumerate(video["clip"])})
    out = tmp_path / "out"
    run_extract(
        ExtractArgs(
            metadata=[str(synthetic_corpus.metadata)],
            videos=synthetic_corpus.videos,
            out=out,
            options=ExtractOptions(frames=0, frame_size=64, shard_size=9),
            subtitles=subs,
            progress=False,
        )
    )
    got = {
        r["clip_id"]: r["subtitle"]
        for p in sorted((out / "shards").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    }
    assert got == expected  # SRT and YouTube-style alike: each clip has exactly its own words
