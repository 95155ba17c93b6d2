"""The captioner comparison's parts without a caption job: text statistics, BLEU-4 against a hand
computation, reference files, refused inputs, and the gallery page's structure and escaping."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.compare import main, read_refs
from analysis.gallery import GalleryClip, GalleryPage, render
from analysis.runs import RunError, open_run, parse_run_arg
from analysis.textstats import caption_scores, distinct_n, text_stats, tokenize
from pipeline.shard_format import CAPTIONS_SCHEMA

JPEG = b"\xff\xd8\xff\xe0" + b"fake-jpeg-body"


def test_tokenize_and_text_stats():
    assert tokenize("A man's Dog, running -- fast!") == ["a", "man's", "dog", "running", "fast"]
    st = text_stats(["a red cat", "a red dog", ""])
    assert (st.captions, st.empty, st.vocabulary, st.lengths) == (3, 1, 4, [3, 3, 0])
    assert st.distinct_1 == pytest.approx(4 / 6) and st.distinct_2 == pytest.approx(3 / 4)
    assert distinct_n([["a", "a", "a"]], 2) == pytest.approx(1 / 2) and distinct_n([[]], 1) == 0.0


def test_bleu4_matches_a_hand_computation_and_cider_orders_captions():
    # hyp "a b c d e" vs ref "a b c d f": precisions 4/5, 3/4, 2/3, 1/2, same length (no brevity
    # penalty): BLEU-4 = (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 0.2 ** 0.25
    s = caption_scores({"x": "A b c d e."}, {"x": ["a b c d f"]})
    assert s["clips"] == 1 and s["bleu4"] == pytest.approx(0.2**0.25, abs=1e-6)
    refs = {"1": ["a red cross moving down"], "2": ["a blue circle moving up"], "3": ["a green square"]}
    good = caption_scores({"1": "a red cross moving", "2": "a blue circle", "3": "green square"}, refs)
    bad = caption_scores({"1": "field field and", "2": "", "3": "with with"}, refs)
    assert good["cider_d"] > bad["cider_d"] >= 0 and good["bleu4"] > bad["bleu4"]
    assert caption_scores({"9": "x"}, refs) == {"clips": 0}


def test_read_refs_both_forms_and_bad_line(tmp_path):
    lines = tmp_path / "r.jsonl"
    lines.write_text('{"clip_id": "a.mp4", "text": "one"}\n\n{"clip_id": "a.mp4", "text": ["two", " "]}\n')
    assert read_refs(lines) == {"a.mp4": ["one", "two"]}
    obj = tmp_path / "r.json"
    obj.write_text(json.dumps({"a.mp4": "one", "b.mp4": ["x", "y"]}))
    assert read_refs(obj) == {"a.mp4": ["one"], "b.mp4": ["x", "y"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clip_id": "a.mp4", "text": "one"}\nclip,caption\n')
    with pytest.raises(RunError, match=r"bad.jsonl:2: expected a JSON line"):
        read_refs(bad)


def _captions(path, rows):
    pq.write_table(pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA), path)
    return path


def test_open_run_refuses_what_is_not_a_caption_output(tmp_path):
    with pytest.raises(RunError, match="LABEL=PATH"):
        parse_run_arg("just/a/path")
    with pytest.raises(RunError, match="label"):
        parse_run_arg("bad label=x")
    with pytest.raises(RunError, match="does not exist"):
        open_run("a", tmp_path / "nowhere")
    (tmp_path / "out").mkdir()
    with pytest.raises(RunError, match="has no captions.parquet"):
        open_run("a", tmp_path / "out")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(RunError, match="not a Parquet file"):
        open_run("a", tmp_path / "c.json")
    pq.write_table(pa.table({"clip_id": ["x"]}), tmp_path / "other.parquet")
    with pytest.raises(RunError, match=r"without column\(s\) \['caption'\]"):
        open_run("a", tmp_path / "other.parquet")
    run = open_run(
        "a",
        _captions(
            tmp_path / "c.parquet", [{"key": "x", "clip_id": "x.mp4", "caption": " hi ", "captioner": "m"}]
        ),
    )
    assert run.captions == {"x.mp4": "hi"} and run.captioners == ["m"] and run.out_dir is None
    assert run.speed()["caption_images_per_s"] is None and "no summary.json" in run.speed()["machine"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a, p: a.__setitem__(1, f"x={p / 'gone'}"), "does not exist"),
        (lambda a, p: a.__setitem__(2, a[2].replace("b=", "a=", 1)), "labels must differ"),
        (lambda a, p: a.__setitem__(1, a[1].replace("a=", "q=")), "also source names"),
        (lambda a, p: a.__setitem__(4, "nope"), "'nope' is not in"),
        (lambda a, p: a.extend(["--refs", str(p / "none.jsonl")]), "--refs"),
        (lambda a, p: a.extend(["--samples", "1"]), "--samples must be >= 2"),
    ],
)
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys, change, message):
    rows = [{"key": "x", "clip_id": "x.mp4", "caption": "a cat", "captioner": "m"}]
    a, b = _captions(tmp_path / "a.parquet", rows), _captions(tmp_path / "b.parquet", rows)
    (tmp_path / "q.txt").write_text("a query\nanother query\n")
    (tmp_path / "s.toml").write_text('[sources.q]\nformat = "text_lines"\npath = "q.txt"\n')
    out = tmp_path / "out"
    argv = [
        "--runs",
        f"a={a}",
        f"b={b}",
        "--tgt",
        "q",
        "--sources",
        str(tmp_path / "s.toml"),
        "--out",
        str(out),
    ]
    change(argv, tmp_path)

    def refuse(*args):
        raise AssertionError("no encoder may be built for a refused command")

    assert main(argv, encoder_factory=refuse) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert not out.exists()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.rows: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag == "tr" and (a.get("id") or "").startswith("clip-"):
            self.rows.append(a["id"] or "")

    def handle_data(self, data):
        self.text.append(data)


def test_gallery_page_structure_and_escaping():
    evil = '<script>alert("x")</script> & "quoted" <b>bold</b>'
    clips = [
        GalleryClip("a.1.mp4", JPEG, "uh the & sign", {"ofa": evil, "blip": "a cat"}, ["ref & one"]),
        GalleryClip("b&<i>.2.mp4", None, None, {"ofa": "", "blip": "a dog"}),
        GalleryClip("c.3.mp4", JPEG, "", {"ofa": "x"}),
    ]
    page = render(
        GalleryPage(
            "t & <title>",
            "UNTRAINED model(s): ofa-tiny-random",
            (["captioner", "NMI"], [["ofa <1>", "0.5 & more"]]),
            ["report <line>"],
            [("fig & caption", b"\x89PNG fake")],
            clips,
            ["ofa", "blip"],
            {"ofa": "ofa (untrained)"},
        )
    )
    p = _Page()
    p.feed(page)
    assert (
        "script" not in p.tags and "b" not in p.tags and "i" not in p.tags
    )  # nothing from the data is markup
    text = "".join(p.text)
    assert evil in text and "b&<i>.2.mp4" in text and "ref & one" in text and "0.5 & more" in text
    assert "&amp;" in page and "&lt;script&gt;" in page
    assert p.rows == ["clip-a.1.mp4", "clip-b&<i>.2.mp4", "clip-c.3.mp4"]  # every clip's row, in order
    jpegs = [i for i in p.imgs if (i["src"] or "").startswith("data:image/jpeg;base64,")]
    pngs = [i for i in p.imgs if (i["src"] or "").startswith("data:image/png;base64,")]
    assert len(jpegs) == 2 and len(pngs) == 1 and len(p.imgs) == 3  # every image inline, no other source
    assert "no frame in the shards" in text and "(empty)" in text and "not captioned" in text
    assert "ofa (untrained)" in text and "UNTRAINED" in text
    assert "http" not in page.replace("http-equiv", "")  # nothing to fetch
