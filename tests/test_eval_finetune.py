"""End to end: fine-tune a tiny model on the synthetic MSR-VTT-format set through trainer.train, evaluate with
the CLI, and check exclusion of missing / corrupt videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from synthetic.corpus import generate
from trainer.config import EvalConfig, RetrievalDataConfig
from trainer.data.retrieval import load_split
from trainer.eval.retrieval import evaluate_model, format_table
from trainer.evaluate import main as evaluate_main
from trainer.model import CLIPViP, tiny_config
from trainer.model.tokenizer import build_tiny_tokenizer, load_clip_tokenizer
from trainer.train import main as train_main

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "finetune_synthetic_tiny.yaml"


def _annotations(ds: Path) -> dict[str, str]:
    return {
        "train_ids": str(ds / "MSRVTT_train.9k.csv"),
        "data_json": str(ds / "MSRVTT_data.json"),
        "val_csv": str(ds / "MSRVTT_val.csv"),
        "test_csv": str(ds / "MSRVTT_JSFUSION_test.csv"),
    }


def test_loaders_read_the_synthetic_downstream_set(synthetic_corpus) -> None:
    ds = synthetic_corpus.downstream
    cfg = RetrievalDataConfig(dataset="msrvtt", videos=str(ds / "videos"), annotations=_annotations(ds))
    train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
    data = json.loads((ds / "MSRVTT_data.json").read_text())
    by_split = {
        s: [v["video_id"] for v in data["videos"] if v["split"] == s] for s in ("train", "validate", "test")
    }
    assert [v.key for v in train.videos] == by_split["train"]
    assert all(len(v.texts) == 5 for v in train.videos)  # every training caption, sampled per step
    assert [v.key for v in val.videos] == by_split["validate"]
    assert [v.key for v in test.videos] == by_split["test"]
    assert all(len(v.texts) == 1 for v in test.videos)


def test_missing_and_corrupt_videos_are_excluded_and_counted(synthetic_corpus, tmp_path: Path) -> None:
    src = synthetic_corpus.downstream
    videos = tmp_path / "videos"
    shutil.copytree(src / "videos", videos)
    data = json.loads((src / "MSRVTT_data.json").read_text())
    ids = [v["video_id"] for v in data["videos"]]
    first = {s["video_id"]: s["caption"] for s in reversed(data["sentences"])}
    csv = tmp_path / "all.csv"
    csv.write_text(
        "key,vid_key,video_id,sentence\n" + "".join(f"r{i},m{i},{v},{first[v]}\n" for i, v in enumerate(ids))
    )
    (videos / f"{ids[0]}.mp4").unlink()  # missing
    (videos / f"{ids[1]}.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 50)  # corrupt
    tok = load_clip_tokenizer(build_tiny_tokenizer(list(first.values()), tmp_path / "tok", num_merges=64))
    torch.manual_seed(0)
    model = CLIPViP(tiny_config(text_vocab=len(tok)))
    cfg = EvalConfig(
        dataset="msrvtt", videos=str(videos), annotations={"test_csv": str(csv)}, split="test",
        num_frames=4, image_size=224, max_text_len=24, num_workers=0,
    )  # fmt: skip
    res = evaluate_model(model, tok, cfg, "cpu")
    assert res["videos_total"] == len(ids) and res["videos_missing"] == 1 and res["videos_failed"] == 1
    assert res["videos_evaluated"] == len(ids) - 2 and res["queries_evaluated"] == len(ids) - 2
    assert res["queries_total"] == len(ids)
    assert res["excluded"][ids[0]] == "missing" and ids[1] in res["excluded"]
    assert 0.0 <= res["t2v_R1"] <= 100.0 and res["metrics"]["dsl"]["v2t"]["MnR"] >= 1.0
    table = format_table(res)
    assert f"{len(ids) - 2}/{len(ids)} queries" in table and "1 missing, 1 undecodable" in table
    assert model.training  # evaluate_model restores the mode


@pytest.fixture(scope="module")
def downstream_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A larger downstream set (16 train / 8 val / 8 test) than the shared fixture's 4/2/2, laid out where the
    tiny config expects it (runs/demo/corpus, relative to the working directory)."""
    root = tmp_path_factory.mktemp("finetune")
    generate(
        root / "runs/demo/corpus",
        videos=0,
        seed=3,
        width=160,
        height=120,
        fps=10.0,
        downstream_videos=(16, 8, 8),
    )
    return root


def _evaluate(root: Path, split: str, *extra: str) -> dict:
    out = root / f"eval_{split}_{len(extra)}.json"
    rc = evaluate_main(
        ["--config", str(CONFIG), "--split", split, "--num-workers", "0", "--out", str(out), *extra]
    )
    assert rc == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_finetune_then_evaluate_beats_zero_shot(
    downstream_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(downstream_dir)
    assert (
        train_main([str(CONFIG), "--eval_every", "100", "--total_steps", "200", "--data.num_workers", "0"])
        == 0
    )
    run = downstream_dir / "runs/demo/finetune_tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 200 and summary["best"]["split"] == "val"  # selected on validation
    assert (run / "best" / "selection.json").is_file()
    # zero-shot = the same seeded initial model (no --checkpoint); training split, all 5 captions per video
    zero = _evaluate(downstream_dir, "train")
    tuned = _evaluate(downstream_dir, "train", "--checkpoint", str(run / "model"))
    assert tuned["queries_evaluated"] == zero["queries_evaluated"] == 80  # multi-caption protocol
    chance = 100 / 16
    assert zero["t2v_R1"] < 3 * chance
    assert tuned["t2v_R1"] >= zero["t2v_R1"] + 15.0, (zero["t2v_R1"], tuned["t2v_R1"])
    assert tuned["v2t_R1"] > 2 * chance and tuned["t2v_MnR"] < zero["t2v_MnR"] - 2.0
    # the held-out test split runs end to end and reports its counts (too few CPU steps to assert transfer)
    test = _evaluate(downstream_dir, "test", "--checkpoint", str(run / "best"))
    assert test["queries_evaluated"] == 8 and test["split"] == "test" and test["metrics"] is not None


@pytest.mark.slow
def test_clip2video_head_trains_on_the_synthetic_set(
    downstream_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same fine-tune with video_head=clip2video (TDB over per-frame features): it fits the training set
    (the loop also asserts every trainable parameter, the head's included, receives a gradient)."""
    monkeypatch.chdir(downstream_dir)
    out = "runs/demo/finetune_c2v"
    args = [str(CONFIG), "--model.video_head", "clip2video", "--out_dir", out, "--data.num_frames", "4"]
    args += [
        "--data.retrieval.num_frames",
        "4",
        "--eval_every",
        "0",
        "--total_steps",
        "200",
        "--data.num_workers",
        "0",
    ]
    assert train_main(args) == 0
    zero = _evaluate(downstream_dir, "train", "--model.video_head", "clip2video", "--out_dir", out)
    tuned = _evaluate(
        downstream_dir, "train", "--checkpoint", f"{out}/model", "--model.video_head", "clip2video"
    )
    assert json.loads((downstream_dir / out / "model" / "config.json").read_text())  # saved with the head
    chance = 100 / 16
    assert tuned["t2v_R1"] >= max(zero["t2v_R1"] + 10.0, 2 * chance), (zero["t2v_R1"], tuned["t2v_R1"])
