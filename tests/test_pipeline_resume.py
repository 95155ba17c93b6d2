"""Kill-and-resume, --retry-failed, option-change refusal and --overwrite of `python -m pipeline extract`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.__main__ import main
from synthetic.corpus import CorpusManifest


def cli(corpus: CorpusManifest, videos: Path, out: Path, *extra: str) -> list[str]:
    return [
        "extract",
        "--metadata",
        str(corpus.metadata),
        "--videos",
        str(videos),
        "--out",
        str(out),
        "--shard-size",
        "2",
        "--no-progress",
        *extra,
    ]


def all_rows(out: Path) -> list[dict]:
    rows: list[dict] = []
    for stats in sorted((out / "shards").glob("*.stats.json")):
        rows += pq.read_table(stats.with_name(stats.name.replace(".stats.json", ".parquet"))).to_pylist()
    return rows


def tar_keys(out: Path) -> Counter[str]:
    keys: Counter[str] = Counter()
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p) as tar:
            keys.update(m.name.split(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".mid.jpg"))
    return keys


def assert_each_clip_once(out: Path, corpus: CorpusManifest) -> None:
    rows = all_rows(out)
    assert Counter(r["clip_id"] for r in rows) == Counter(corpus.clip_ids)
    assert all(r["status"] == "ok" for r in rows)
    assert tar_keys(out) == Counter(r["key"] for r in rows)
    assert not [p for p in (out / "shards").iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_and_resume(synthetic_corpus: CorpusManifest, tmp_path: Path, workers: str) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        *cli(synthetic_corpus, synthetic_corpus.videos, out, "--workers", workers),
    ]
    cmd += ["--store-video"]  # slower shards leave time to kill mid-run
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "shards" / "00000.stats.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its pool workers, mid-shard
    proc.wait()
    assert first.exists()
    complete = sorted(p.name for p in (out / "shards").glob("*.stats.json"))
    assert len(complete) < 5, "the run finished before it could be killed"
    # A shard interrupted between its renames has data files but no stats: it must not count as done.
    for stats in (out / "shards").glob("*.stats.json"):
        assert stats.with_name(stats.name.replace(".stats.json", ".tar")).exists()
    before = {n: (out / "shards" / n).stat().st_mtime_ns for n in complete}
    (out / "shards" / ".00004.tar.tmp-999-deadbeef").write_bytes(b"partial")  # left by a killed writer
    assert (
        main(cli(synthetic_corpus, synthetic_corpus.videos, out, "--workers", workers, "--store-video")) == 0
    )
    assert_each_clip_once(out, synthetic_corpus)
    # Shards that were complete were skipped, not rewritten.
    assert {n: (out / "shards" / n).stat().st_mtime_ns for n in complete} == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["counts"] == {"ok": 9}


def test_retry_failed_and_refusals(synthetic_corpus: CorpusManifest, tmp_path: Path, capsys) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(synthetic_corpus.videos, videos)
    hidden = videos / f"{synthetic_corpus.video_ids[1]}.mp4"
    hidden.rename(tmp_path / "hidden.mp4")
    out = tmp_path / "out"
    assert main(cli(synthetic_corpus, videos, out, "--frames", "4")) == 0
    rows = all_rows(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 3 and all(r["error"].startswith("open: video file not found") for r in failed)
    assert tar_keys(out) == Counter(r["key"] for r in rows if r["status"] == "ok")

    # A rerun skips complete shards, failures included.
    (tmp_path / "hidden.mp4").rename(hidden)
    assert main(cli(synthetic_corpus, videos, out, "--frames", "4")) == 0
    assert sum(r["status"] == "failed" for r in all_rows(out)) == 3

    # A changed option is refused (exit 2) and nothing is touched.
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert main(cli(synthetic_corpus, videos, out, "--frames", "8")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == mtimes

    # --retry-failed redoes only the failed clips; ok clips of the same shards keep their samples.
    assert main(cli(synthetic_corpus, videos, out, "--frames", "4", "--retry-failed")) == 0
    rows = all_rows(out)
    assert Counter(r["clip_id"] for r in rows) == Counter(synthetic_corpus.clip_ids)
    assert all(r["status"] == "ok" for r in rows)
    assert tar_keys(out) == Counter(r["key"] for r in rows)
    retried = [json.loads(p.read_text())["retried"] for p in sorted((out / "shards").glob("*.stats.json"))]
    assert sum(retried) == 3
    with tarfile.open(out / "shards" / "00000.tar") as tar:
        assert sum(m.name.endswith(".jpg") for m in tar.getmembers()) == 2 * (1 + 4)

    # --overwrite starts over with the new options.
    assert main(cli(synthetic_corpus, videos, out, "--frames", "8", "--overwrite")) == 0
    assert json.loads((out / "plan.json").read_text())["options"]["frames"] == 8
    assert_each_clip_once(out, synthetic_corpus)


def test_second_run_on_same_out_is_refused(synthetic_corpus: CorpusManifest, tmp_path: Path, capsys) -> None:
    from pipeline.extract import lock_output

    out = tmp_path / "out"
    held = lock_output(out)
    try:
        assert main(cli(synthetic_corpus, synthetic_corpus.videos, out)) == 2
        assert "another extract run" in capsys.readouterr().err
    finally:
        held.close()
    assert not (out / "plan.json").exists()


def _pool_workers(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]


def test_killed_pool_worker_loses_nothing(synthetic_corpus: CorpusManifest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = cli(synthetic_corpus, synthetic_corpus.videos, out, "--workers", "2", "--store-video")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first = out / "shards" / "00000.stats.json"
        deadline = time.time() + 120
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        workers = _pool_workers(proc.pid)
        assert workers, "no pool worker found"
        os.kill(workers[0], signal.SIGKILL)  # one worker dies mid-shard; the driver must survive it
        assert proc.wait(timeout=120) == 1  # incomplete: it says so and exits non-zero
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["complete"] and summary["shard_errors"]
    assert main(args) == 0
    assert_each_clip_once(out, synthetic_corpus)
