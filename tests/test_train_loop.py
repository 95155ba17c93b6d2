"""The training loop end to end on CPU: kill-and-resume equals an uninterrupted run, and real learning
(tiny model, synthetic corpus -> `python -m pipeline extract` -> shards -> train -> held-out retrieval)."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from test_train_data import scene_samples, write_shard

from synthetic.corpus import generate
from trainer.config import load_config
from trainer.data.shards import DecodeOptions, decode_sample, find_shard_tars, index_tar
from trainer.eval.metrics import retrieval_metrics
from trainer.loop.logs import read_log
from trainer.model import from_pretrained
from trainer.model.tokenizer import load_clip_tokenizer
from trainer.train import Trainer, run

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "trainer" / "configs" / "tiny_cpu.yaml"


def _losses(out: Path) -> dict[int, float]:
    # A resumed run re-logs the steps after its last checkpoint: keep the latest record of each step.
    return {r["step"]: r["loss"] for r in read_log(out / "log.jsonl") if r["kind"] == "train"}


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loop_shards")
    for i in range(2):
        samples = scene_samples(24, 20 + i, prefix=f"s{i}_")
        samples[3]["cap"] = None  # one uncaptioned clip per shard: the masked path runs too
        write_shard(out / "shards" / f"{i:05d}.tar", samples)
    return out


def _tiny_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data.shards", f"[{shards}]", "--out_dir", str(out), "--data.batch_size", "8",
        "--data.num_workers", "1", "--log_every", "1", "--schedule.total_steps", "8", "--save_every", "4",
        "--optim.lr", "2e-3", *extra,
    ]  # fmt: skip


class _Killed(RuntimeError):
    pass


def test_kill_and_resume_continues_the_same_run(small_shards: Path, tmp_path: Path, monkeypatch) -> None:
    ref = tmp_path / "uninterrupted"
    run(load_config(TINY, _tiny_args(small_shards, ref)))
    expected = _losses(ref)
    assert sorted(expected) == list(range(1, 9))

    # Same run, killed during step 7: the last checkpoint is step 4's, so steps 5-8 are redone after resume.
    out = tmp_path / "killed"
    original = Trainer.train_step

    def dying(self, batch):
        if self.step == 6:
            raise _Killed
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying)
    with pytest.raises(_Killed):
        run(load_config(TINY, _tiny_args(small_shards, out)))
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 4
    assert not list((out / "checkpoints").glob(".*tmp*"))  # atomic save leaves no temp file
    monkeypatch.setattr(Trainer, "train_step", original)
    # A different process-level RNG state must not matter: everything random is restored or seeded.
    random.seed(123)
    torch.manual_seed(123)
    summary = run(load_config(TINY, _tiny_args(small_shards, out)))
    got = _losses(out)
    assert summary["steps"] == 8 and sorted(got) == list(range(1, 9))
    for step in range(1, 9):
        assert abs(got[step] - expected[step]) < 1e-6, (step, got[step], expected[step])
    ref_model = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k, v in ck_model(out).items():
        assert torch.allclose(v, ref_model[k], atol=1e-6, rtol=0), k
    assert (out / "loss_curves.png").is_file() and (out / "model" / "model.safetensors").is_file()
    assert any((out / "tensorboard").iterdir())


def ck_model(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_resume_refuses_another_world_size(small_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    run(load_config(TINY, _tiny_args(small_shards, out, "--max_steps", "1")))
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    ck["world_size"] = 2
    torch.save(ck, out / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match="written by 2 processes"):
        run(load_config(TINY, _tiny_args(small_shards, out, "--max_steps", "2")))


# -------------------------------------------------------------------------------------------- learning


def _add_captions(tar: Path, captions: dict[str, str]) -> None:
    """Insert K.cap.txt after each sample's members (what the captioning job adds to a shard); here the
    captions are the corpus truth, i.e. an ideal captioner."""
    with tarfile.open(tar) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]  # type: ignore[union-attr]
    tmp = tar.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w") as out:
        for i, (m, data) in enumerate(members):
            out.addfile(m, io.BytesIO(data))
            key = m.name.split(".", 1)[0]
            last = i + 1 == len(members) or members[i + 1][0].name.split(".", 1)[0] != key
            if last and key in captions:
                info = tarfile.TarInfo(f"{key}.cap.txt")
                data = captions[key].encode()
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    tmp.replace(tar)


def _heldout_r1(run_dir: Path, shards: Path, heldout: list[str]) -> tuple[float, int]:
    """Video -> caption R@1 (percent) over held-out clips with distinct captions, uniform frames."""
    model = from_pretrained(run_dir / "model").eval()
    tok = load_clip_tokenizer(run_dir / "tokenizer")
    opt = DecodeOptions(4, model.config.vision.image_size, "jpg", False, False, True)
    videos, caps = [], []
    for t in find_shard_tars([str(shards)]):
        tix = index_tar(t)
        with open(t, "rb") as fh:
            for i, key in enumerate(tix.keys):
                if key in heldout:
                    s = decode_sample(tix.read(fh, i), opt, random.Random(0))
                    if s["caption"] not in caps:
                        videos.append(s["video"])
                        caps.append(s["caption"])
    with torch.no_grad():
        v = model.encode_video(torch.stack(videos))
        ids, mask = tok(caps, 32)
        c = model.encode_text(ids, mask)
    return retrieval_metrics(v @ c.T)["R1"], len(caps)


@pytest.mark.slow
def test_tiny_model_learns_video_text_retrieval(tmp_path: Path) -> None:
    corpus = generate(tmp_path / "corpus", videos=24, clips_per_video=6, seed=0, width=64, height=64, fps=10.0,
                      downstream_videos=(0, 0, 0))  # fmt: skip
    ext = tmp_path / "extracted"
    subprocess.run(
        [sys.executable, "-m", "pipeline", "extract", "--metadata", str(corpus.metadata), "--videos",
         str(corpus.clips), "--layout", "clips", "--out", str(ext), "--subtitles", str(corpus.subtitles),
         "--frame-size", "32", "--shard-size", "50", "--workers", "1", "--no-progress"],
        check=True,
    )  # fmt: skip
    truth = json.loads(corpus.truth.read_text())["clips"]
    key = {c["clip_id"]: c["clip_id"].rsplit(".", 1)[0].replace(".", "_") for c in truth}
    for tar in find_shard_tars([str(ext)]):
        _add_captions(tar, {key[c["clip_id"]]: c["caption"] for c in truth})
    heldout_videos = set(corpus.video_ids[-4:])
    heldout = [key[c["clip_id"]] for c in truth if c["video_id"] in heldout_videos]
    (tmp_path / "heldout.txt").write_text("\n".join(heldout) + "\n")
    out = tmp_path / "run"
    summary = run(
        load_config(
            TINY,
            [
                "--data.shards",
                f"[{ext}]",
                "--out_dir",
                str(out),
                "--data.exclude_keys",
                str(tmp_path / "heldout.txt"),
                "--log_every",
                "25",
            ],  # the tiny config's 300 steps: 47.6% R@1 (200 steps gave 19.0%, too close to 3x chance)
        )  # fmt: skip
    )
    assert summary["data"]["excluded"] > 0  # held-out clips never reach training
    r1, n = _heldout_r1(out, ext, heldout)
    chance = 100.0 / n
    print(f"held-out video->caption R@1 = {r1:.1f}% over {n} clips (chance {chance:.1f}%)")
    assert n >= 10
    assert r1 >= 3 * chance
    losses = _losses(out)
    assert losses[max(losses)] < 0.5 * losses[1]


def test_retrieval_finetuning_with_validation_selects_on_val(tmp_path: Path) -> None:
    corpus = generate(tmp_path / "c", videos=0, clips_per_video=1, seed=1, width=64, height=64, fps=10.0,
                      downstream_videos=(8, 3, 3))  # fmt: skip
    d = corpus.downstream
    common = f"videos: {d / 'videos'}, num_frames: 4, max_text_len: 32"
    out = tmp_path / "ft"
    summary = run(
        load_config(
            TINY,
            [
                "--out_dir",
                str(out),
                "--loss",
                "vs",
                "--data.kind",
                "retrieval",
                "--data.batch_size",
                "4",
                "--data.num_workers",
                "0",
                "--data.retrieval",
                f"{{dataset: msrvtt, {common}, annotations: {{train_ids: "
                f"{d / 'MSRVTT_train.9k.csv'}, data_json: {d / 'MSRVTT_data.json'}}}}}",
                "--eval",
                f"{{dataset: msrvtt, {common}, split: val, num_workers: 0, annotations: "
                f"{{val_csv: {d / 'MSRVTT_val.csv'}}}}}",
                "--eval_every",
                "2",
                "--schedule.total_steps",
                "4",
                "--log_every",
                "1",
            ],
        )  # fmt: skip
    )
    vals = [r for r in read_log(out / "log.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [2, 4] and all(r["videos_evaluated"] == 3 for r in vals)
    best = json.loads((out / "best" / "selection.json").read_text())
    assert best["split"] == "val" and best["score"] == max(r["t2v_R1"] for r in vals)
    assert summary["best"]["step"] == best["step"]
    # The exported dir is a complete init for the next stage (weights + tokenizer).
    nxt = run(load_config(TINY, ["--out_dir", str(tmp_path / "next"), "--model.tiny", "false",
                                 "--model.init", str(out / "best"), "--loss", "vs", "--data.kind", "retrieval",
                                 "--data.batch_size", "4", "--data.num_workers", "0",
                                 "--data.retrieval", f"{{dataset: msrvtt, {common}, annotations: {{train_ids: "
                                 f"{d / 'MSRVTT_train.9k.csv'}, data_json: {d / 'MSRVTT_data.json'}}}}}",
                                 "--max_steps", "1"]))  # fmt: skip
    assert nxt["steps"] == 1


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch) -> None:
    from trainer.loop import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def crash(obj, fh):  # dies half-way through writing the new checkpoint
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(path)["step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
