"""Shard loader on small WebDataset tars in the contract format (CONTRACTS §3), written here.

Also holds the contract-format shard writer the other trainer tests reuse (``write_shard``,
``scene_samples``).
"""

from __future__ import annotations

import io
import json
import random
import re
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import shard_format
from synthetic.content import SceneRenderer, all_attributes, caption, random_scene, subtitle
from trainer.config import load_config
from trainer.data.frames import CLIP_MEAN, CLIP_STD, jittered_indices, uniform_indices
from trainer.data.samples import (
    CorruptSample,
    DecodeCache,
    DecodedSample,
    DecodeOptions,
    _mp4_frames,
    decode_sample,
    decode_whole,
    draw_sample,
    needed_members,
)
from trainer.data.shards import build_shard_loader, find_shard_tars, index_tar
from trainer.model.tokenizer import build_tiny_tokenizer, load_clip_tokenizer

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------- shard writing


def _jpg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def encode_mp4(frames: list[np.ndarray], fps: int = 3) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "10"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict[str, Any]]) -> Path:
    """Contract-format tar through the format's owner (pipeline.shard_format): middle frame, sampled
    frames, subtitle, caption (if any), json, mp4 (if any).

    A sample dict has ``key, frames`` (uint8 HxWx3 list) and optional ``sub, cap, mp4, raw`` (raw: extra
    extension -> bytes that replace or add members, e.g. a corrupt jpg).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with shard_format.open_tar_writer(path) as tf:
        for s in samples:
            k = s["key"]
            frames = s["frames"]
            meta = {"clip_id": k + ".mp4", "video_id": k.split("_")[0], "span": [0.0, 1.0], "fps": 30.0}
            members = shard_format.sample_members(
                k,
                middle=_jpg(frames[len(frames) // 2]),
                frames=[_jpg(f) for f in frames],
                subtitle=s.get("sub", ""),
                caption=s.get("cap"),
                meta=json.dumps(meta).encode(),
                video=s.get("mp4"),
            )
            replaced = {shard_format.member_name(k, ext): data for ext, data in s.get("raw", {}).items()}
            members = [(n, replaced.pop(n, d)) for n, d in members] + list(replaced.items())
            for name, data in members:
                shard_format.add_member(tf, name, data)
    path.with_name(path.name[: -len(shard_format.TAR_SUFFIX)] + shard_format.STATS_SUFFIX).write_text("{}")
    return path


def scene_samples(n: int, seed: int, size: int = 32, frames: int = 12, prefix: str = "v") -> list[dict]:
    """Corpus-like clips: a coloured shape moving on grey; caption = truth, subtitle = loose ASR text."""
    rng = np.random.default_rng(seed)
    attrs = all_attributes()
    out = []
    for i in range(n):
        a = attrs[int(rng.integers(len(attrs)))]
        r = SceneRenderer(random_scene(rng, a), size, size, size)
        clip = [r.render(p) for p in np.linspace(0, 1, frames)]
        out.append(
            {"key": f"{prefix}{i:04d}_{seed}", "frames": clip, "sub": subtitle(rng, a), "cap": caption(a)}
        )
    return out


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tok")
    texts = [s["sub"] + " " + s["cap"] for s in scene_samples(60, 0)]
    return load_clip_tokenizer(build_tiny_tokenizer(texts, d))


def _grey_frames(n: int, size: int = 32, step: int = 20) -> list[np.ndarray]:
    return [np.full((size, size, 3), 10 + step * i, np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline_out")
    a = scene_samples(10, 1, prefix="a")
    a[3]["cap"] = None  # not captioned
    a[5]["raw"] = {"f04.jpg": b"\xff\xd8 this is not a jpeg"}  # corrupt
    write_shard(out / "shards" / "00000.tar", a)
    b = scene_samples(10, 2, prefix="b")
    b[0]["mp4"] = encode_mp4(_grey_frames(12))
    b[0]["key"] = "mp4clip"
    write_shard(out / "shards" / "00001.tar", b)
    # An incomplete shard (no stats.json yet) must be ignored.
    write_shard(out / "shards" / "00002.tar", scene_samples(4, 3, prefix="c"))
    (out / "shards" / "00002.stats.json").unlink()
    return out


def _cfg(shards: Path, *extra: str):
    return load_config(
        None,
        ["--data.shards", f"[{shards}]", "--data.batch_size", "4", "--loss", "vsc_fc", "--seed", "7", *extra],
    )


# ----------------------------------------------------------------------------------------------- tests


def test_finds_only_complete_shards_and_indexes_samples(shard_dir: Path) -> None:
    tars = find_shard_tars([str(shard_dir)])
    assert [t.name for t in tars] == ["00000.tar", "00001.tar"]
    idx = index_tar(tars[0])
    assert len(idx) == 10 and idx.keys[0] == "a0000_1"
    assert set(idx.members[0]) == {"mid.jpg", "sub.txt", "cap.txt", "json"} | {
        f"f{i:02d}.jpg" for i in range(12)
    }
    assert "cap.txt" not in idx.members[3]


def test_batches_shapes_normalisation_captions_and_corrupt(shard_dir: Path, tokenizer) -> None:
    loader = build_shard_loader(_cfg(shard_dir, "--data.num_workers", "0"), tokenizer, 0, 1, image_size=32)
    it = iter(loader)
    seen: dict[str, Any] = {}
    for _ in range(15):  # 60 draws over 19 good samples: every sample is seen (P(miss) < 1e-6)
        b = next(it)
        assert b.video.shape == (4, 12, 3, 32, 32) and b.image.shape == (4, 1, 3, 32, 32)
        assert b.text_ids.shape == (4, 70) and b.cap_ids.shape == (4, 70)
        for j, k in enumerate(b.keys):
            seen[k] = (b, j)
    assert "a0005_1" not in seen  # the corrupt jpg sample is skipped ...
    assert loader.totals["corrupt"] >= 1  # ... and counted
    b, j = seen["a0003_1"]  # missing caption: kept, masked, never the text "None"
    assert not bool(b.cap_valid[j])
    assert tokenizer.decode(b.cap_ids[j].tolist()) == ""
    assert loader.totals["missing_caption_masked"] >= 1
    b, j = seen["a0000_1"]
    assert bool(b.cap_valid[j]) and tokenizer.decode(b.cap_ids[j].tolist()) == scene_samples(1, 1)[0]["cap"]
    # CLIP normalisation of the grey mp4 clip's first frame region: value = (x/255 - mean) / std.
    b, j = seen["mp4clip"]
    x = b.video[j, :, 0].mean(dim=(1, 2))  # red channel per frame
    grey = (x * CLIP_STD[0] + CLIP_MEAN[0]) * 255  # back to pixel values
    idx = torch.round((grey - 10) / 20)
    assert torch.all(idx[1:] >= idx[:-1])  # frames in temporal order
    assert 0 <= idx[0] <= int(12 / 11) and 11 - int(12 / 11) <= idx[-1] <= 11  # jittered endpoints


def test_mp4_jitter_varies_and_jpg_frames_are_exact(shard_dir: Path, tokenizer) -> None:
    starts = set()
    loader = build_shard_loader(_cfg(shard_dir, "--data.num_workers", "0"), tokenizer, 0, 1, image_size=32)
    it = iter(loader)
    for _ in range(40):
        b = next(it)
        for j, k in enumerate(b.keys):
            if k == "mp4clip":
                grey = (b.video[j, :, 0].mean(dim=(1, 2)) * CLIP_STD[0] + CLIP_MEAN[0]) * 255
                starts.add(int(torch.round((grey[0] - 10) / 20)))
    assert starts <= {0, 1} and len(starts) == 2  # start ~ U{0..interval}, interval = int(12/11) = 1


def test_drop_policy_skips_uncaptioned(shard_dir: Path, tokenizer) -> None:
    cfg = _cfg(shard_dir, "--data.num_workers", "0", "--data.missing_caption", "drop")
    loader = build_shard_loader(cfg, tokenizer, 0, 1, image_size=32)
    it = iter(loader)
    keys = [k for _ in range(10) for k in next(it).keys]
    assert "a0003_1" not in keys and loader.totals["missing_caption_dropped"] >= 1


@pytest.mark.parametrize("workers", [0, 2])
def test_data_order_is_deterministic_and_resumes_exactly(shard_dir: Path, tokenizer, workers: int) -> None:
    cfg = _cfg(shard_dir, "--data.num_workers", str(workers), "--loss", "vs")

    def take(loader, n):
        it = iter(loader)
        return [next(it).keys for _ in range(n)]

    full = take(build_shard_loader(cfg, tokenizer, 0, 1, image_size=32), 7)
    first = build_shard_loader(cfg, tokenizer, 0, 1, image_size=32)
    head = take(first, 3)
    state = first.state_dict()
    resumed = build_shard_loader(cfg, tokenizer, 0, 1, image_size=32)
    resumed.load_state_dict(state)
    assert head + take(resumed, 4) == full
    other_rank = take(build_shard_loader(cfg, tokenizer, 1, 2, image_size=32), 3)
    assert other_rank != head  # ranks draw different streams


def test_damaged_shard_is_skipped(tmp_path: Path, tokenizer) -> None:
    good = write_shard(tmp_path / "shards" / "00000.tar", scene_samples(6, 4, prefix="g"))
    bad = tmp_path / "shards" / "00001.tar"
    bad.write_bytes(b"not a tar file at all" * 100)
    bad.with_suffix(".stats.json").write_text("{}")
    loader = build_shard_loader(_cfg(tmp_path, "--data.num_workers", "0"), tokenizer, 0, 1, image_size=32)
    it = iter(loader)
    keys = {k for _ in range(4) for k in next(it).keys}
    assert keys and all(k.startswith("g") for k in keys) and good.is_file()


# ------------------------------------------------------------------------------- format owner, decode path


def test_shard_format_round_trip(tmp_path: Path) -> None:
    """Members written by the owner's writer come back, grouped by the key rule, from its reader."""
    tar = tmp_path / "shards" / "00003.tar"
    tar.parent.mkdir()
    with shard_format.open_tar_writer(tar) as tf:
        for key, cap in (("a_1", "a caption"), ("b_2", None)):
            members = shard_format.sample_members(
                key, middle=b"M" + key.encode(), frames=[b"F0", b"F1", b"F2"], subtitle="sub",
                caption=cap, meta=b"{}", video=b"V" if cap else None,
            )  # fmt: skip
            for name, data in members:
                shard_format.add_member(tf, name, data)
    assert shard_format.shard_index(tar) == 3 and shard_format.complete_shard_tars(tmp_path) == []
    samples = dict(shard_format.iter_samples(tar))
    assert list(samples) == ["a_1", "b_2"]
    a, b = samples["a_1"], samples["b_2"]
    assert a[shard_format.MIDDLE] == b"Ma_1" and a[shard_format.VIDEO] == b"V"
    assert shard_format.frame_exts(a) == [shard_format.frame_ext(j) for j in range(3)]
    assert [a[e] for e in shard_format.frame_exts(a)] == [b"F0", b"F1", b"F2"]
    assert a[shard_format.CAPTION] == b"a caption" and shard_format.CAPTION not in b
    only = dict(shard_format.iter_samples(tar, (shard_format.SUBTITLE,)))
    assert only == {"a_1": {shard_format.SUBTITLE: b"sub"}, "b_2": {shard_format.SUBTITLE: b"sub"}}
    assert shard_format.split_member("x_1.F00.JPG") == ("x_1", "f00.jpg")
    assert shard_format.split_member("noext") is None


def test_mp4_converts_only_sampled_frames_exactly(shard_dir: Path) -> None:
    """Sampled frames equal a conversion of every decoded frame (PyAV's own per-frame path)."""
    tars = find_shard_tars([str(shard_dir)])
    tix = index_tar(tars[1])
    i = tix.keys.index("mp4clip")
    with open(tix.path, "rb") as fh:
        data = tix.read(fh, i)[shard_format.VIDEO]
    with av.open(io.BytesIO(data)) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for seed in range(5):
        rng = random.Random(seed)
        picked = _mp4_frames(data, 4, rng)
        idx = jittered_indices(len(every), 4, random.Random(seed))
        np.testing.assert_array_equal(picked, np.stack([every[j] for j in idx]))
    np.testing.assert_array_equal(
        _mp4_frames(data, 3, None), np.stack([every[j] for j in uniform_indices(12, 3)])
    )
    with pytest.raises(CorruptSample):
        decode_sample(
            {shard_format.VIDEO: b"not an mp4", shard_format.SUBTITLE: b"s"},
            DecodeOptions(4, 32, "mp4", True, False, False),
            random.Random(0),
        )


def test_only_needed_members_are_read(shard_dir: Path) -> None:
    tars = find_shard_tars([str(shard_dir)])
    tix = index_tar(tars[1])
    with_video = tix.members[tix.keys.index("mp4clip")]
    jpg_only = tix.members[1]
    full = DecodeOptions(4, 32, "auto", True, need_image=True, need_caption=True)
    assert needed_members(with_video, full) == {"mp4", "mid.jpg", "sub.txt", "cap.txt"}
    frames = {f"f{j:02d}.jpg" for j in range(12)}
    assert needed_members(with_video, DecodeOptions(4, 32, "jpg", True, False, False)) == frames | {"sub.txt"}
    assert needed_members(jpg_only, full) == frames | {"mid.jpg", "sub.txt", "cap.txt"}
    # the decoded sample is the same whether every member or only the needed ones are read
    with open(tix.path, "rb") as fh:
        for i in range(len(tix)):
            a = decode_sample(tix.read(fh, i), full, random.Random(i))
            b = decode_sample(tix.read(fh, i, needed_members(tix.members[i], full)), full, random.Random(i))
            assert torch.equal(a["video"], b["video"]) and torch.equal(a["image"], b["image"])
            assert (a["subtitle"], a["caption"]) == (b["subtitle"], b["caption"])


# ------------------------------------------------------------------------------------------- decode cache


def _same_draw(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert torch.equal(a["video"], b["video"])  # bit-exact, not allclose
    assert (a["image"] is None and b["image"] is None) or torch.equal(a["image"], b["image"])
    assert (a["subtitle"], a["caption"]) == (b["subtitle"], b["caption"])


def test_cached_decode_draws_equal_fresh_decodes(shard_dir: Path, tmp_path: Path) -> None:
    """A draw from a cached decode is the fresh decode with the same RNG, for jittered mp4 draws, fixed mp4
    and jpg frames, with and without a resize; corrupt samples fail with the same reason."""
    moving = [f for f in scene_samples(1, 9, size=48, frames=10)[0]["frames"]]  # textured, resized below
    extra = write_shard(
        tmp_path / "00000.tar", [{"key": "big_1", "frames": moving, "mp4": encode_mp4(moving)}]
    )
    raws = []
    for tar in [*find_shard_tars([str(shard_dir)]), extra]:
        tix = index_tar(tar)
        with open(tar, "rb") as fh:
            raws += [tix.read(fh, i) for i in range(len(tix))]
    options = [
        DecodeOptions(4, 24, "auto", True, need_image=True, need_caption=True),
        DecodeOptions(3, 32, "auto", True, need_image=False, need_caption=True),
        DecodeOptions(4, 24, "mp4", False, need_image=True, need_caption=False),
        DecodeOptions(5, 24, "jpg", True, need_image=True, need_caption=True),
    ]
    jittered = 0
    for opt in options:
        for raw in raws:
            try:
                cached = decode_whole(raw, opt)
            except CorruptSample as e:
                with pytest.raises(CorruptSample, match=re.escape(str(e))):
                    decode_sample(raw, opt, random.Random(0))
                continue
            jittered += cached.jitter
            for seed in range(4):
                _same_draw(
                    draw_sample(cached, opt, random.Random(seed)),
                    decode_sample(raw, opt, random.Random(seed)),
                )
    assert jittered == 4  # the two mp4 clips under the two jittering options ...
    big = decode_whole(raws[-1], options[0])
    assert big.frames.shape == (10, 24, 24, 3)  # ... keep every frame, squashed once
    videos = {draw_sample(big, options[0], random.Random(s))["video"].numpy().tobytes() for s in range(8)}
    assert len(videos) > 1  # the draws do differ: the test above compared jittered positions


def test_decode_cache_is_lru_and_capped() -> None:
    def item(n: int) -> DecodedSample:
        return DecodedSample(np.zeros((n, 8, 8, 3), np.uint8), True, None, "s", None)

    cache = DecodeCache(max_bytes=3 * item(4).nbytes())
    for k in "abc":
        cache.put((k,), item(4))
    assert cache.get(("a",)) is not None  # a is now the most recent
    cache.put(("d",), item(4))  # evicts b, the least recent
    assert cache.get(("b",)) is None and all(cache.get((k,)) is not None for k in "acd")
    cache.put(("huge",), item(400))  # larger than the whole cache: not kept, nothing evicted
    assert cache.get(("huge",)) is None and cache.used <= cache.max_bytes and cache.get(("c",)) is not None
    cache.put(("bad",), "mp4 decodes to no frame")
    assert cache.get(("bad",)) == "mp4 decodes to no frame"


@pytest.mark.parametrize("cache_bytes", [2**20, 120_000])  # holds every sample / a few (evicts)
def test_loader_with_decode_cache_yields_the_same_batches(
    shard_dir: Path, tokenizer, cache_bytes: int
) -> None:
    cfg = _cfg(shard_dir, "--data.num_workers", "0")
    plain, cached = (build_shard_loader(cfg, tokenizer, 0, 1, image_size=24) for _ in range(2))
    cached.dataset.decode_cache_bytes = cache_bytes
    for a, b in zip(islice(iter(plain), 20), islice(iter(cached), 20), strict=True):
        assert a.keys == b.keys
        for f in ("video", "image", "text_ids", "text_mask", "cap_ids", "cap_mask", "cap_valid"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
    hits, misses = cached.totals["decode_cache_hits"], cached.totals["decode_cache_misses"]
    assert hits + misses == 20 * 4 + cached.totals["corrupt"] and hits > 0
    assert misses > 20 if cache_bytes < 2**20 else misses <= 20  # 20 samples: evictions re-decode
    assert plain.totals["corrupt"] == cached.totals["corrupt"] and plain.totals["decode_cache_hits"] == 0


def test_decode_cache_config() -> None:
    assert load_config(ROOT / "trainer" / "configs" / "tiny_cpu.yaml", []).data.decode_cache_mb > 0
    assert load_config(None, []).data.decode_cache_mb == 0  # off by default: real corpora see a clip rarely
    with pytest.raises(ValueError, match="decode_cache_mb"):
        load_config(None, ["--data.decode_cache_mb", "-1"])


def test_decode_cache_remembers_corrupt_samples(tmp_path: Path, tokenizer) -> None:
    """A corrupt sample is decoded once, then skipped from its cached reason, counted on every draw."""
    samples = scene_samples(3, 5, prefix="c")
    samples[1]["raw"] = {"mid.jpg": b"\xff\xd8 not a jpeg"}
    write_shard(tmp_path / "shards" / "00000.tar", samples)
    cfg = _cfg(tmp_path, "--data.num_workers", "0", "--data.num_frames", "2")
    plain, cached = (build_shard_loader(cfg, tokenizer, 0, 1, image_size=32) for _ in range(2))
    cached.dataset.decode_cache_bytes = 2**20
    for a, b in zip(islice(iter(plain), 4), islice(iter(cached), 4), strict=True):
        assert a.keys == b.keys and "c0001_5" not in a.keys and torch.equal(a.video, b.video)
    assert cached.totals["corrupt"] == plain.totals["corrupt"] > 1
    assert cached.totals["decode_cache_misses"] == 3
