"""The Ray caption job end to end: a real loopback cluster, `ray job submit`, a stopped and resubmitted job,
and the embedded mode. Outputs are checked against CONTRACTS §3 and the synthetic corpus truth (every
stored frame carries its frame index, read back with synthetic.stamp.read_stamp).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import ray_cluster
from synthetic.stamp import read_stamp

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "jobs/caption_hdvila.py"
TAG_VAR = "CLIPVIP_TEST_RAY_TAG"
MARKER_VAR = "CLIPVIP_TEST_CRASH_MARKER"

SHARD_COLUMNS = {
    "key": "string",
    "clip_id": "string",
    "video_id": "string",
    "shard": "int32",
    "span_start": "double",
    "span_end": "double",
    "middle_time": "double",
    "subtitle": "string",
    "caption": "string",
    "captioner": "string",
    "status": "string",
    "error": "string",
    "decode_ms": "float",
    "caption_ms": "float",
}


# ---- a captioner for fault tests: imported by the captioner actors as "tests.test_job_ray:..." ----------


class StampCaptioner:
    """Captions each image with the frame index stamped on it (so a caption proves which frame the actor
    got), slowly, and kills its own process on the first call of the run (so Ray must restart the actor
    and retry the call)."""

    id = "stamp-test(crash-once)"

    def __init__(self, marker: Path, delay_s: float) -> None:
        self.marker = marker
        self.delay_s = delay_s

    def caption(self, images: list[np.ndarray]) -> list[str]:
        time.sleep(self.delay_s)
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(17)  # a hard crash, as a segfault or CUDA abort would be
        return [f"frame {read_stamp(im)}" for im in images]


def stamp_captioner(**_: object) -> StampCaptioner:
    return StampCaptioner(Path(os.environ[MARKER_VAR]), delay_s=1.0)


# ---- helpers ---------------------------------------------------------------------------------------------


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries `tag` (every Ray process inherits its starter's env)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return found


def job_args(metadata: list[str], videos: Path, out: Path, *extra: str) -> list[str]:
    return [
        "python",
        SCRIPT,
        "--metadata",
        *metadata,
        "--videos",
        str(videos),
        "--out",
        str(out),
        "--shard-size",
        "2",
        *extra,
    ]


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            key, _, ext = m.name.partition(".")
            data = tf.extractfile(m)
            assert data is not None
            samples.setdefault(key, {})[ext] = data.read()
    return samples


def stamp_of(jpeg: bytes) -> int:
    return read_stamp(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))


def check_outputs(
    out: Path,
    truth: dict,
    metadata_clip_ids: list[str],
    failing: set[str],
    layout: str,
    captioner_prefix: str,
) -> dict[str, dict]:
    """Checks OUT against CONTRACTS §3 and the corpus truth; returns the rows by clip id."""
    plan = json.loads((out / "plan.json").read_text())
    assert plan["total_clips"] == len(metadata_clip_ids)
    n = plan["num_shards"]
    assert n == (len(metadata_clip_ids) + 1) // 2
    rows: dict[str, dict] = {}
    order: list[str] = []
    for i in range(n):
        stem = out / "shards" / f"{i:05d}"
        table = pq.read_table(stem.with_suffix(".parquet"))
        assert {f.name: str(f.type) for f in table.schema} == SHARD_COLUMNS
        stats = json.loads(stem.with_suffix(".stats.json").read_text())
        assert stats  # written last; its presence marks the shard complete
        samples = read_tar(stem.with_suffix(".tar"))
        shard_rows = table.to_pylist()
        assert {r["key"] for r in shard_rows if r["status"] == "ok"} == set(samples)
        for r in shard_rows:
            assert r["shard"] == i
            assert r["clip_id"] not in rows, f"{r['clip_id']} appears twice"
            rows[r["clip_id"]] = r
            order.append(r["clip_id"])
            if r["clip_id"] in failing:
                assert r["status"] == "failed" and r["error"].startswith("open: "), r
                assert r["caption"] is None
                continue
            assert r["status"] == "ok" and r["error"] is None, r
            t = truth[r["clip_id"]]
            sel = t["full_layout"] if layout == "full" else t["clips_layout"]
            sample = samples[r["key"]]
            assert stamp_of(sample["mid.jpg"]) == sel["middle_index"]
            assert [stamp_of(sample[f"f{j:02d}.jpg"]) for j in range(12)] == sel["sampled_indices"]
            assert sample["sub.txt"].decode() == t["subtitle"] == r["subtitle"]
            assert sample["cap.txt"].decode() == r["caption"]
            assert r["captioner"].startswith(captioner_prefix) and r["caption_ms"] is not None
            meta = json.loads(sample["json"])
            assert meta["clip_id"] == r["clip_id"] and meta["video_id"] == t["video_id"]
            assert {"span", "middle_time", "frame_times", "fps", "width", "height"} <= set(meta)
    assert order == metadata_clip_ids  # every metadata clip exactly once, in metadata order
    captions = pq.read_table(out / "captions.parquet")
    assert captions.column_names[:4] == ["key", "clip_id", "caption", "captioner"]
    ok = {c: r for c, r in rows.items() if r["status"] == "ok"}
    assert {r["clip_id"]: r["caption"] for r in captions.to_pylist()} == {
        c: r["caption"] for c, r in ok.items()
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["captioner"].startswith(captioner_prefix)
    assert summary["complete"] is True and summary["num_missing_shards"] == 0
    want_counts = {"ok": len(metadata_clip_ids) - len(failing), "failed": len(failing)}
    assert summary["counts"] == {k: v for k, v in want_counts.items() if v}
    return rows


def clip_ids_of(metadata: list[Path]) -> list[str]:
    ids = []
    for path in metadata:
        for line in path.read_text().splitlines():
            ids.extend(c["clip_id"] for c in json.loads(line)["clip"])
    return ids


def ray_cli(
    cluster: ray_cluster.LocalCluster, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ray_cluster.VENV_BIN / "ray"), "job", *args],
        cwd=REPO,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- tests -----------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_job_submit_resume_and_faults(synthetic_corpus, tmp_path):
    """One loopback cluster: a full job with the tiny OFA; then a job stopped midway (with a captioner
    that crashes its actor once) and resubmitted: nothing lost, nothing duplicated, finished shards kept."""
    corpus = synthetic_corpus
    truth = {c["clip_id"]: c for c in corpus.load_truth()["clips"]}
    # A second metadata file adds a clip whose video does not exist: it must fail, recorded, once.
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    shutil.copy(corpus.metadata, meta_dir / "part0.jsonl")
    missing = {
        "video_id": "MISSINGvid0",
        "url": "",
        "clip": [{"clip_id": "MISSINGvid0.1.mp4", "span": ["00:00:01.000", "00:00:02.000"]}],
    }
    (meta_dir / "part1.jsonl").write_text(json.dumps(missing) + "\n")
    metadata_files = sorted(meta_dir.glob("*.jsonl"))
    all_ids = clip_ids_of(metadata_files)
    tag = uuid.uuid4().hex
    os.environ[TAG_VAR] = tag  # inherited by `ray start` and so by every process of the cluster
    cluster = None
    try:
        cluster = ray_cluster.start_local_cluster(num_cpus=2)
        assert cluster.env["RAY_AUTH_MODE"] == "disabled"
        common = ("--subtitles", str(corpus.subtitles))

        # 1. A blocking submit with the tiny random OFA, in the `full` layout.
        out1 = tmp_path / "out1"
        args = job_args(
            [str(meta_dir / "*.jsonl")], corpus.videos, out1, "--captioner", "ofa-tiny-random", *common
        )
        r = ray_cli(cluster, "submit", "--address", cluster.dashboard_url, "--working-dir", ".", "--", *args)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
        assert "[caption-job] clips" in r.stdout  # the progress line reaches the job log
        check_outputs(out1, truth, all_ids, {"MISSINGvid0.1.mp4"}, "full", "ofa-tiny-random")

        # 2. Stop a slow job once its first shard is complete, then resubmit it.
        out2 = tmp_path / "out2"
        marker = tmp_path / "crashed"
        env_json = json.dumps({"env_vars": {MARKER_VAR: str(marker)}})
        args = job_args(
            [str(meta_dir / "*.jsonl")],
            corpus.videos,
            out2,
            "--captioner",
            "tests.test_job_ray:stamp_captioner",
            "--captioner-cpus",
            "0",
            "--caption-input-size",
            "224",  # the stamp survives a 224x224 squash: captions still name the right frame
            *common,
        )
        submit = (
            "submit",
            "--address",
            cluster.dashboard_url,
            "--working-dir",
            ".",
            "--runtime-env-json",
            env_json,
        )
        r = ray_cli(cluster, *submit, "--submission-id", "stopme", "--no-wait", "--", *args)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        deadline = time.monotonic() + 240
        while not list((out2 / "shards").glob("*.stats.json")):
            assert time.monotonic() < deadline, ray_cli(
                cluster, "logs", "--address", cluster.dashboard_url, "stopme"
            ).stdout
            time.sleep(0.2)
        r = ray_cli(cluster, "stop", "--address", cluster.dashboard_url, "stopme")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        status = ray_cli(cluster, "status", "--address", cluster.dashboard_url, "stopme").stdout
        assert "was stopped" in status or "STOPPED" in status, status
        assert marker.exists()  # the actor crashed once (and was restarted: shards got written)
        done_before = {
            p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out2 / "shards").glob("*.stats.json")
        }
        num_shards = json.loads((out2 / "plan.json").read_text())["num_shards"]
        assert 1 <= len(done_before) < num_shards
        assert not (out2 / "summary.json").exists() and not (out2 / "captions.parquet").exists()

        r = ray_cli(cluster, *submit, "--", *args)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
        rows = check_outputs(out2, truth, all_ids, {"MISSINGvid0.1.mp4"}, "full", "stamp-test")
        for clip_id, row in rows.items():
            if row["status"] == "ok":  # the caption names the frame the captioner actor was given
                assert row["caption"] == f"frame {truth[clip_id]['full_layout']['middle_index']}"
        for name, (mtime, data) in done_before.items():  # finished shards were not redone
            p = out2 / "shards" / name
            assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
        summary = json.loads((out2 / "summary.json").read_text())
        assert summary["shards_already_complete"] == len(done_before)
        assert summary["shards_this_run"] == num_shards - len(done_before)
    finally:
        os.environ.pop(TAG_VAR, None)
        if cluster is not None:
            left = ray_cluster.stop_local_cluster(cluster)
            assert not left, f"Ray processes left: {left}"
            assert not cluster.temp_dir.exists()
    assert not tagged_processes(tag)


@pytest.mark.ray
@pytest.mark.slow
def test_embedded_mode_clips_layout(synthetic_corpus, tmp_path):
    """`python jobs/caption_hdvila.py` with no cluster: an embedded loopback Ray, stopped at the end."""
    corpus = synthetic_corpus
    truth = {c["clip_id"]: c for c in corpus.load_truth()["clips"]}
    out = tmp_path / "out"
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env[TAG_VAR] = tag
    env.pop("PYTHONPATH", None)
    args = job_args(
        [str(corpus.metadata)],
        corpus.clips,
        out,
        "--layout",
        "clips",
        "--captioner",
        "noop",
        "--subtitles",
        str(corpus.subtitles),
    )
    args[:2] = [sys.executable, str(REPO / SCRIPT)]
    r = subprocess.run(
        [*args, "--num-cpus", "2", "--captioner-cpus", "0"],
        cwd=tmp_path,  # not the repo root: the script must find its modules by itself
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    check_outputs(out, truth, list(corpus.clip_ids), set(), "clips", "noop")
    deadline = time.monotonic() + 30
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not tagged_processes(tag)

    # Resubmitting a finished job does no work and keeps the outputs.
    before = (out / "captions.parquet").read_bytes()
    r = subprocess.run(
        [*args, "--num-cpus", "2", "--captioner-cpus", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 shards to do" in r.stdout
    assert (out / "captions.parquet").read_bytes() == before


# ---- fast checks of the driver-side pieces (no Ray started) ----------------------------------------------


def test_stream_config_window_and_errors():
    from jobs.shard_stream import StreamConfig, estimate_shard_bytes
    from pipeline.plan import ExtractOptions

    # 8 CPUs, 2 captioner actors of 1 CPU: 6 decode slots + 2 x 2 captioner slots + 1 writer.
    assert StreamConfig(num_captioners=2).resolve(8.0).max_inflight == 11
    # Capped so the in-flight shards' frames stay under half of the object store.
    shard = estimate_shard_bytes(ExtractOptions(shard_size=100, frames=12, frame_size=224))
    assert shard == 100 * (13 * 224 * 224 * 3 + 1280 * 720 * 3)
    assert StreamConfig().resolve(64.0, object_store_bytes=4 * shard, shard_bytes=shard).max_inflight == 2
    assert StreamConfig(max_inflight=3).resolve(64.0).max_inflight == 3  # explicit wins
    small = estimate_shard_bytes(ExtractOptions(shard_size=100), caption_size=480)
    assert small == 100 * (13 * 224 * 224 * 3 + 480 * 480 * 3)
    with pytest.raises(ValueError, match="CPUs"):
        StreamConfig(num_captioners=2).resolve(2.0)  # no CPU left to decode


def test_progress_line_and_embedded_detection():
    from jobs.shard_stream import Progress

    p = Progress(total_clips=100, todo_clips=60, todo_shards=6)
    p.done_clips, p.failed_clips, p.done_shards = 30, 2, 3
    line = p.line()
    assert "clips 30/60 (50.0%)" in line and "failed 2" in line and "shards 3/6" in line
    assert "40 clips already done" in line and "ETA" in line
    assert ray_cluster.wants_embedded(["--out", "x"], environ={})
    assert not ray_cluster.wants_embedded(["--address", "auto"], environ={})
    assert not ray_cluster.wants_embedded(["--address=127.0.0.1:6379"], environ={})
    assert not ray_cluster.wants_embedded([], environ={"RAY_ADDRESS": "127.0.0.1:6379"})
    env = ray_cluster.loopback_env(Path("/tmp/h"), base={"PATH": "/usr/bin"})
    assert env["RAY_AUTH_MODE"] == "disabled" and env["HOME"] == "/tmp/h"
    assert env["PATH"].startswith(str(ray_cluster.VENV_BIN))


def test_split_middles_and_failure_reason():
    from jobs.caption_stages import failure_reason, split_middles
    from pipeline.decode import ClipResult
    from pipeline.metadata import ClipRow

    rows = [ClipRow(i, f"v{i}.{i}.mp4", f"v{i}", 0.0, 1.0, "m:1") for i in range(3)]
    big = np.zeros((720, 1280, 3), np.uint8)
    results = [
        ClipResult(rows[0], "ok", middle=big),
        ClipResult.failed(rows[1], "open: video file not found: v1.*", middle=big),
        ClipResult(rows[2], "ok", middle=big),
    ]
    kept, middles = split_middles(results, caption_size=480)
    assert list(middles) == ["v0.0.mp4", "v2.2.mp4"]  # keyed by clip id, failed clips left out
    assert all(m.shape == (480, 480, 3) for m in middles.values())
    assert all(r.middle is None for r in kept)  # the native frames never travel with the results
    _, native = split_middles([ClipResult(rows[0], "ok", middle=big)])
    assert native["v0.0.mp4"] is big
    assert failure_reason(ValueError("bad\nsecond line")) == "ValueError: bad"
