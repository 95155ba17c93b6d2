"""Loaders of the NMI analysis on small files written in the real published formats, messy variants included."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.sources import SourceFormatError, SourceSpec, load_registry, load_source


def load(tmp_path: Path, fmt: str, name: str, content: str | bytes, **options):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8", newline="")
    return load_source(SourceSpec(name="s", format=fmt, path=p, options=options))


MSRVTT_CSV = (
    "key,vid_key,video_id,sentence\n"
    "ret7,msr7001,video7001,a man is talking\n"
    'ret8,msr7002,video7002,"a woman, smiling, sings"\n'
    "ret9,msr7003,video7003,   \n"
    "ret10,msr7004,video7004\n"
    "ret11,msr7005,video7005,  a dog runs  \n"
)


def test_msrvtt_csv_comma(tmp_path):
    src = load(tmp_path, "msrvtt_csv", "a.csv", MSRVTT_CSV)
    assert src.texts == ["a man is talking", "a woman, smiling, sings", "a dog runs"]
    assert (src.rows, src.empty, src.malformed) == (5, 1, 1)
    assert any("line 5" in n for n in src.notes)


def test_msrvtt_csv_semicolon_crlf_bom_no_trailing_newline(tmp_path):
    # the minhhieu121/AIC_benchmark copy: `;`, CRLF, no final newline; plus a UTF-8 BOM
    body = "key;vid_key;video_id;sentence\r\nret7;msr7001;video7001;a man is talking\r\nret8;msr7002;video7002;a cat"
    src = load(tmp_path, "msrvtt_csv", "b.csv", b"\xef\xbb\xbf" + body.encode())
    assert src.texts == ["a man is talking", "a cat"]
    assert src.rows == 2 and src.empty == 0


def test_msrvtt_csv_explicit_delimiter_and_wrong_file(tmp_path):
    src = load(tmp_path, "msrvtt_csv", "c.csv", "key|sentence\nk|hello there\n", delimiter="|")
    assert src.texts == ["hello there"]
    # the 9k split list has no sentence column: clear error naming the header
    with pytest.raises(SourceFormatError, match=r"'sentence'.*found header \['video_id'\]"):
        load(tmp_path, "msrvtt_csv", "train.9k.csv", "video_id\nvideo1\nvideo2\n")
    with pytest.raises(SourceFormatError, match="sentence"):
        load(tmp_path, "msrvtt_csv", "d.json", '{"videos": [], "sentences": []}')


def test_msrvtt_json_data_and_split_and_list_forms(tmp_path):
    doc = {
        "videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video7001", "split": "test"}],
        "sentences": [
            {"video_id": "video0", "caption": "a train caption", "sen_id": 0},
            {"video_id": "video7001", "caption": "a test caption", "sen_id": 1},
            {"video_id": "video7001", "caption": " ", "sen_id": 2},
        ],
    }
    text = json.dumps(doc)
    assert load(tmp_path, "msrvtt_json", "m.json", text).texts == ["a train caption", "a test caption"]
    src = load(tmp_path, "msrvtt_json", "m.json", text, split="test")
    assert src.texts == ["a test caption"] and src.empty == 1
    with pytest.raises(SourceFormatError, match="splits present"):
        load(tmp_path, "msrvtt_json", "m.json", text, split="validate")
    caps = [
        {"video": "video7010.mp4", "caption": ["one", "two"]},
        {"video": "video7011.mp4", "caption": "three"},
    ]
    assert load(tmp_path, "msrvtt_json", "l.json", json.dumps(caps)).texts == ["one", "two", "three"]
    with pytest.raises(SourceFormatError, match="not valid JSON.*key,vid_key"):
        load(tmp_path, "msrvtt_json", "x.json", MSRVTT_CSV)


DIDEMO = [
    {
        "annotation_id": 1,
        "description": "the dog jumps into the pool",
        "times": [[1, 1], [1, 2]],
        "video": "123@N00_1_ab.mov",
        "dl_link": "https://x",
        "num_segments": 6,
    },
    {
        "annotation_id": 2,
        "description": " camera zooms in ",
        "times": [[0, 0]],
        "video": "123@N00_1_ab.mov",
        "num_segments": 6,
    },
    {"annotation_id": 3, "description": "", "times": [[2, 2]], "video": "456@N00_2_cd", "num_segments": 5},
    {
        "annotation_id": 4,
        "description": "a girl waves",
        "times": [[2, 2]],
        "video": "456@N00_2_cd",
        "num_segments": 5,
    },
]


def test_didemo_sentence_and_paragraph(tmp_path):
    text = json.dumps(DIDEMO)
    src = load(tmp_path, "didemo_json", "d.json", text)
    assert src.texts == ["the dog jumps into the pool", "camera zooms in", "a girl waves"] and src.empty == 1
    par = load(tmp_path, "didemo_json", "d.json", text, mode="paragraph")
    assert par.texts == ["the dog jumps into the pool camera zooms in", "a girl waves"]
    ret = [{"video": "a.mp4", "caption": ["s one", "s two"]}]
    assert load(tmp_path, "didemo_json", "r.json", json.dumps(ret), mode="paragraph").texts == ["s one s two"]
    with pytest.raises(SourceFormatError, match="mode"):
        load(tmp_path, "didemo_json", "d.json", text, mode="para")
    with pytest.raises(SourceFormatError, match="expects a JSON list"):
        load(tmp_path, "didemo_json", "c.json", json.dumps({"annotations": []}))


def test_coco_json_and_karpathy(tmp_path):
    doc = {
        "info": {},
        "images": [{"id": 1}],
        "annotations": [
            {"image_id": 1, "id": 5, "caption": "A man riding a wave on top of a surfboard.\n"},
            {"image_id": 1, "id": 6, "caption": None},
            {"image_id": 1, "id": 7, "caption": 42},
        ],
    }
    src = load(tmp_path, "coco_json", "c.json", json.dumps(doc))
    assert src.texts == ["A man riding a wave on top of a surfboard."]
    assert (src.empty, src.malformed) == (1, 1)
    karpathy = {
        "images": [
            {"split": "test", "sentences": [{"raw": "a test image"}]},
            {"split": "train", "sentences": [{"raw": "a train image"}]},
        ]
    }
    assert load(tmp_path, "coco_json", "k.json", json.dumps(karpathy), split="test").texts == ["a test image"]
    with pytest.raises(SourceFormatError, match="'annotations'"):
        load(tmp_path, "coco_json", "x.json", json.dumps(DIDEMO))


def test_cc_tsv_both_column_orders(tmp_path):
    cc3m = 'a dog runs along the beach\thttps://example.com/1.jpg\nsaid "hi\thttp://x/2.jpg\n\t\thttp://x/3.jpg\n'
    src = load(tmp_path, "cc_tsv", "cc3m.tsv", cc3m)
    assert src.texts == ["a dog runs along the beach", 'said "hi'], src.notes
    assert src.malformed == 1  # the 3-field line
    cc12m = "https://example.com/1.jpg\tactor attends the premiere\r\nhttps://x/2.jpg\t  \r\n"
    src = load(tmp_path, "cc_tsv", "cc12m.tsv", cc12m)
    assert src.texts == ["actor attends the premiere"] and src.empty == 1
    assert any("CC12M" in n for n in src.notes)
    with pytest.raises(SourceFormatError, match="two tab-separated"):
        load(tmp_path, "cc_tsv", "x.tsv", MSRVTT_CSV)


def test_webvid_csv(tmp_path):
    body = (
        "videoid,name,page_idx,page_dir,duration,contentUrl\n"
        "1234567890,Aerial view of a green forest,12345,001001_001050,PT00H00M17S,https://x/p.mp4\n"
        '22,"Close up, slow motion",1,001001_001050,PT00H00M09S,https://x/q.mp4\n'
    )
    assert load(tmp_path, "webvid_csv", "w.csv", body).texts == [
        "Aerial view of a green forest",
        "Close up, slow motion",
    ]
    with pytest.raises(SourceFormatError, match="'name'"):
        load(tmp_path, "webvid_csv", "m.csv", MSRVTT_CSV)


def test_subtitles_jsonl_bad_lines_counted(tmp_path):
    lines = [
        json.dumps({"clip_id": "a.0.mp4", "text": "so today we're going to cook"}),
        "{not json",
        json.dumps({"clip_id": "a.1.mp4"}),
        json.dumps({"clip_id": "a.2.mp4", "text": ""}),
        "",
        json.dumps({"clip_id": "a.3.mp4", "text": ["one", "two"]}),
    ]
    src = load(tmp_path, "subtitles_jsonl", "s.jsonl", "\r\n".join(lines))
    assert src.texts == ["so today we're going to cook", "one", "two"]
    assert (src.empty, src.malformed) == (1, 2)
    assert any("line 2: bad JSON" in n for n in src.notes)
    with pytest.raises(SourceFormatError, match="none of 6 line"):
        load(tmp_path, "subtitles_jsonl", "x.jsonl", MSRVTT_CSV)


def test_captions_parquet(tmp_path):
    p = tmp_path / "captions.parquet"
    pq.write_table(
        pa.table(
            {
                "key": ["a", "b", "c"],
                "clip_id": ["a.mp4", "b.mp4", "c.mp4"],
                "caption": ["a man sitting at a table", None, " "],
                "captioner": ["ofa"] * 3,
            }
        ),
        p,
    )
    src = load_source(SourceSpec("cap", "captions_parquet", p))
    assert src.texts == ["a man sitting at a table"] and src.empty == 2
    with pytest.raises(SourceFormatError, match="no 'subtitle' column"):
        load_source(SourceSpec("cap", "captions_parquet", p, {"column": "subtitle"}))
    with pytest.raises(SourceFormatError, match="expects a Parquet file"):
        load(tmp_path, "captions_parquet", "c.parquet", "not parquet")
    with pytest.raises(SourceFormatError, match="Parquet file, not text_lines"):
        load_source(SourceSpec("cap", "text_lines", p))


def test_text_lines_and_not_utf8(tmp_path):
    src = load(tmp_path, "text_lines", "t.txt", b"\xef\xbb\xbfone\r\n\r\n  two  \rthree")
    assert src.texts == ["one", "two", "three"] and src.empty == 1
    with pytest.raises(SourceFormatError, match="not UTF-8"):
        load(tmp_path, "text_lines", "bin.txt", b"ok\n\xff\xfe\x00garbage")


def test_registry_paths_options_and_errors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("x\n")
    reg = tmp_path / "reg.toml"
    reg.write_text(
        '[sources.a]\nformat = "text_lines"\npath = "sub/a.txt"\n'
        '[sources.d]\nformat = "didemo_json"\npath = "/abs/test_data.json"\nmode = "paragraph"\n'
    )
    specs = load_registry(reg)
    assert specs["a"].path == tmp_path / "sub" / "a.txt"
    assert specs["d"].path == Path("/abs/test_data.json") and specs["d"].options == {"mode": "paragraph"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[sources.a]\nformat = "csv"\npath = "a.txt"\n')
    with pytest.raises(SourceFormatError, match="format 'csv' is not one of"):
        load_registry(bad)
    bad.write_text('[sources.a]\nformat = "text_lines"\npath = "a.txt"\nmode = "x"\n')
    with pytest.raises(SourceFormatError, match="unknown option"):
        load_registry(bad)
    bad.write_text("[sources.a\n")
    with pytest.raises(SourceFormatError, match="not valid TOML"):
        load_registry(bad)


def test_example_registry_parses():
    specs = load_registry(Path(__file__).resolve().parents[1] / "analysis" / "sources.example.toml")
    assert {"hdvila_sub", "hdvila_cap", "webvid", "coco", "cc12m", "msrvtt", "didemo"} <= set(specs)
