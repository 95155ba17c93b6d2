"""The evaluation side of the annotation layer: every benchmark role reads the published forms (list
forms, DiDeMo duplicates, id lists by video_id), both stages read the same texts, wrong files are one
line, and the evaluation refuses metrics on a split with missing videos unless given a floor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from analysis.sources import SourceSpec, load_source
from pipeline.annotations import AnnotationError
from trainer.config import EvalConfig, RetrievalDataConfig
from trainer.data.retrieval import load_split
from trainer.data.retrieval import main as data_main
from trainer.eval.retrieval import evaluate_model, format_table, presence_refusal
from trainer.evaluate import main as evaluate_main
from trainer.model import CLIPViP, tiny_config
from trainer.model.tokenizer import build_tiny_tokenizer, load_clip_tokenizer

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "finetune_synthetic_tiny.yaml"
LINK = "https://www.flickr.com/video_download.gne?id=1234567890"
DIDEMO = [
    {"video": "12345678@N00_1234567890_abcdef1234.mov", "description": "the dog jumps", "times": [[0, 1]],
     "dl_link": LINK, "num_segments": 6, "annotation_id": 1},
    {"video": "98765@N01_222_ff.mp4", "description": "a girl waves", "times": [[2, 2]],
     "dl_link": "https://www.flickr.com/video_download.gne?id=222", "annotation_id": 2},
    {"video": "12345678@N00_1234567890_abcdef1234.mp4", "description": " the dog swims", "times": [[2, 3]],
     "dl_link": LINK, "annotation_id": 3},
]  # fmt: skip


def cfg(dataset: str, **annotations: Path) -> RetrievalDataConfig:
    return RetrievalDataConfig(dataset=dataset, annotations={k: str(v) for k, v in annotations.items()})


def test_didemo_duplicate_names_are_one_video_in_both_stages(tmp_path: Path) -> None:
    p = tmp_path / "test_data.json"
    p.write_text(json.dumps(DIDEMO), encoding="utf-8")
    rs = load_split(cfg("didemo", test_json=p), "test")
    assert [v.key for v in rs.videos] == ["12345678@N00_1234567890_abcdef1234", "98765@N01_222_ff"]
    nmi = load_source(SourceSpec("didemo", "didemo_json", p, {"mode": "paragraph"}))
    assert nmi.texts == rs.queries()[0] == ["the dog jumps the dog swims", "a girl waves"]
    # the paragraph-retrieval list form: the same videos and paragraphs
    q = tmp_path / "didemo_ret_test.json"
    q.write_text(json.dumps([{"video": "a.mp4", "caption": ["one", "two"]}]), encoding="utf-8")
    assert load_split(cfg("didemo", test_json=q), "test").queries()[0] == ["one two"]


def test_list_forms_where_the_benchmarks_take_json(tmp_path: Path) -> None:
    lst = tmp_path / "msrvtt_train.json"
    lst.write_text(
        json.dumps([{"video": "video1.mp4", "caption": ["a", "b"]}, {"video": "video2", "caption": "c"}])
    )
    ids = tmp_path / "MSRVTT_train.9k.csv"
    ids.write_text("video_id\nvideo2\nvideo1\n", encoding="utf-8")
    rs = load_split(cfg("msrvtt", train_ids=ids, data_json=lst), "train")
    assert [(v.key, v.texts) for v in rs.videos] == [("video2", ["c"]), ("video1", ["a", "b"])]
    anet = tmp_path / "anet_ret_val1.json"
    anet.write_text(
        json.dumps([{"video": "v_AbCdEfGhIjK.mp4", "caption": ["A man lifts.", " He drops it."]}])
    )
    assert load_split(cfg("activitynet", test_json=anet), "test").queries()[0] == [
        "A man lifts. He drops it."
    ]
    # an LSMDC json given where the tsv goes is read as json, never as csv rows
    ls = tmp_path / "lsmdc_test.json"
    ls.write_text(
        json.dumps([{"video": "1010_M/1010_M_00.01.02.000-00.01.03.500.avi", "caption": "SOMEONE sits"}])
    )
    rs = load_split(cfg("lsmdc", test_csv=ls), "test")
    assert [(v.key, v.texts) for v in rs.videos] == [("1010_M_00.01.02.000-00.01.03.500", ["SOMEONE sits"])]


def test_msrvtt_test_ids_read_by_video_id_column(tmp_path: Path) -> None:
    data = {
        "videos": [{"video_id": f"video{i}", "split": "test"} for i in range(3)],
        "sentences": [{"video_id": f"video{i % 3}", "caption": f"c{i}", "sen_id": i} for i in range(6)],
    }
    dj = tmp_path / "MSRVTT_data.json"
    dj.write_text(json.dumps(data), encoding="utf-8")
    ids = tmp_path / "test_ids.csv"
    ids.write_text("key,video_id\nk0,video2\nk1,video0\n", encoding="utf-8")  # video_id is not column 0
    rs = load_split(cfg("msrvtt", test_ids=ids, data_json=dj), "test")
    assert [(v.key, v.texts) for v in rs.videos] == [("video2", ["c2", "c5"]), ("video0", ["c0", "c3"])]


@pytest.mark.parametrize(
    ("dataset", "role", "content", "found"),
    [
        ("msrvtt", "test_csv", '{"videos": [], "sentences": []}', "found a msrvtt_json file"),
        ("didemo", "test_json", "key,vid_key,video_id,sentence\nr,m,video1,x\n", "found a msrvtt_csv file"),
        ("activitynet", "test_json", json.dumps(DIDEMO), "found a didemo_json file"),
        ("lsmdc", "test_csv", "", "found an empty file"),
    ],
)
def test_wrong_file_for_a_role_is_one_line_exit_2(
    tmp_path: Path, capsys, dataset, role, content, found
) -> None:
    p = tmp_path / "ann"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(AnnotationError, match=found):
        load_split(cfg(dataset, **{role: p}), "test")
    (tmp_path / "c.yaml").write_text(
        f"eval:\n  dataset: {dataset}\n  split: test\n  videos: {tmp_path}\n  annotations:\n    {role}: {p}\n"
    )
    assert data_main(["check", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(p) in err and found in err


def _downstream(tmp_path: Path, n: int, present: int) -> Path:
    """An MSR-VTT test csv of n videos with `present` dummy files, where the tiny config looks."""
    ds = tmp_path / "runs/demo/corpus/downstream"
    (ds / "videos").mkdir(parents=True)
    rows = "".join(f"ret{i},msr{i},video{i},caption {i}\n" for i in range(n))
    (ds / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n" + rows, encoding="utf-8")
    for i in range(present):
        (ds / "videos" / f"video{i}.mp4").write_bytes(b"not decoded: refused before")
    return ds


def test_evaluate_refuses_a_split_with_missing_videos(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _downstream(tmp_path, 10, 3)
    out = tmp_path / "res.json"
    rc = evaluate_main(["--config", str(CONFIG), "--split", "test", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not out.exists()
    assert "only 3 of 10 videos found" in err[0] and "--min-videos-present 0.300" in err[0]
    # a bad floor and a missing videos root are one line too
    assert (
        evaluate_main(["--config", str(CONFIG), "--split", "test", "--videos", str(tmp_path / "nope")]) == 2
    )
    assert "is not a directory" in capsys.readouterr().err
    assert evaluate_main(["--config", str(CONFIG), "--min-videos-present", "1.5"]) == 2
    assert "--min-videos-present is a fraction" in capsys.readouterr().err


def test_metrics_carry_their_n_and_a_floor_decides(synthetic_corpus, tmp_path: Path) -> None:
    src = synthetic_corpus.downstream
    videos = tmp_path / "videos"
    shutil.copytree(src / "videos", videos)
    data = json.loads((src / "MSRVTT_data.json").read_text())
    test = [v["video_id"] for v in data["videos"] if v["split"] == "test"]
    (videos / f"{test[0]}.mp4").unlink()
    tok = load_clip_tokenizer(build_tiny_tokenizer(["a caption"], tmp_path / "tok", num_merges=16))
    torch.manual_seed(0)
    model = CLIPViP(tiny_config(text_vocab=len(tok)))
    ecfg = EvalConfig(
        dataset="msrvtt", videos=str(videos), split="test", num_frames=2, image_size=224, max_text_len=16,
        num_workers=0, annotations={"test_csv": str(src / "MSRVTT_JSFUSION_test.csv")},
    )  # fmt: skip
    res = evaluate_model(model, tok, ecfg, "cpu")
    n = len(test)
    assert res["metrics"]["plain"]["t2v"]["n"] == res["t2v_n"] == n - 1 and res["t2v_n_split"] == n
    assert res["metrics"]["dsl"]["v2t"]["n"] == n - 1 and res["dsl_v2t_n_split"] == n
    table = format_table(res)
    rows = table.splitlines()[2:]  # every metric row ends with its n: queries for t2v, videos for v2t
    assert [r.split("  ")[-1] for r in rows] == [f"{n - 1}/{n} queries", f"{n - 1}/{n} videos"] * 2
    assert "1 missing" in presence_refusal(res, 1.0)  # type: ignore[operator]
    assert presence_refusal(res, (n - 1) / n) is None


@pytest.mark.parametrize(
    ("dataset", "role", "fmt", "name", "content"),
    [
        ("msrvtt", "test_csv", "msrvtt_csv", "t.csv",
         "\ufeffkey;vid_key;video_id;sentence\r\nret0;msr1;video1;  a man  cooks\r\nret1;msr2;video2;a dog"),
        ("lsmdc", "test_csv", "lsmdc_tsv", "l.csv",
         "1010_M_00.01.02.000-00.01.03.500\t00.01.02.000\t00.01.03.500\t00.01.02.000\t00.01.03.500\t SOMEONE sits.\n"),
        ("activitynet", "test_json", "activitynet_json", "val_1.json",
         json.dumps({"v_A": {"duration": 9.0, "timestamps": [[0, 4], [4, 9]], "sentences": ["One.", " Two."]}})),
        ("didemo", "test_json", "didemo_json", "test_data.json", json.dumps(DIDEMO)),
    ],
)  # fmt: skip
def test_both_stages_read_the_same_texts(tmp_path: Path, dataset, role, fmt, name, content) -> None:
    p = tmp_path / name
    p.write_bytes(content.encode())
    rs = load_split(RetrievalDataConfig(dataset=dataset, mode="sentence", annotations={role: str(p)}), "test")
    # the same texts (the trainer lists them grouped by video, the NMI in file order)
    assert sorted(load_source(SourceSpec("s", fmt, p)).texts) == sorted(rs.queries()[0]) != []
