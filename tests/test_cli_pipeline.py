"""Issue 16, pipeline side: `pipeline extract`, the Ray job and `synthetic.corpus` refuse bad input in
one line before writing anything, show their defaults in --help, and stop cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli_checks import REPO, assert_refused, cli_env, run_entry, tree

from synthetic.corpus import CorpusManifest, generate

JOB = REPO / "jobs" / "caption_hdvila.py"


def extract_args(corpus: CorpusManifest, videos: Path, out: Path, *extra: str) -> list[str]:
    meta = str(corpus.root / "meta" / "*.jsonl")
    return [
        "-m",
        "pipeline",
        "extract",
        "--metadata",
        meta,
        "--videos",
        str(videos),
        "--out",
        str(out),
        *extra,
    ]


def test_extract_refuses_a_videos_root_without_the_named_videos(
    synthetic_corpus: CorpusManifest, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert_refused(run_entry(extract_args(synthetic_corpus, tmp_path / "nope", out)), "--videos not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    line = assert_refused(
        run_entry(extract_args(synthetic_corpus, empty, out)), "none of the 3 videos", str(empty)
    )
    assert "--layout full" in line
    # The clips layout looks for ROOT/<video_id>/<clip_id>: the full-video root holds none of them.
    line = assert_refused(
        run_entry(extract_args(synthetic_corpus, synthetic_corpus.videos, out, "--layout", "clips"))
    )
    assert "none of the 9 videos" in line and "<video_id>/<clip_id>" in line
    assert not out.exists()  # nothing written, so nothing pinned: the right root just works
    ok = run_entry(
        extract_args(synthetic_corpus, synthetic_corpus.videos, out, "--frames", "0", "--no-progress")
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout.splitlines()[-1])["counts"] == {"ok": 9}


def test_extract_refuses_bad_paths_and_options(synthetic_corpus: CorpusManifest, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    before = tree(tmp_path)
    videos = synthetic_corpus.videos
    assert_refused(
        run_entry(extract_args(synthetic_corpus, videos, a_file)), "--out must be a directory", "a file"
    )
    assert_refused(
        run_entry(extract_args(synthetic_corpus, videos, a_file / "sub")), "--out cannot be created"
    )
    assert_refused(
        run_entry(extract_args(synthetic_corpus, a_file, tmp_path / "o")), "--videos must be a directory"
    )
    assert_refused(
        run_entry(
            extract_args(synthetic_corpus, videos, tmp_path / "o", "--subtitles", str(tmp_path / "s.jsonl"))
        ),
        "--subtitles not found",
    )
    assert_refused(
        run_entry(extract_args(synthetic_corpus, videos, tmp_path / "o", "--frames", "-1")), "frames >= 0"
    )
    bad_meta = [
        "-m",
        "pipeline",
        "extract",
        "--metadata",
        str(tmp_path / "m*.jsonl"),
        "--videos",
        str(videos),
    ]
    assert_refused(run_entry([*bad_meta, "--out", str(tmp_path / "o")]), "--metadata", "matched no files")
    (tmp_path / "m.jsonl").write_text('{"video_id": "x"}\n')
    assert_refused(run_entry([*bad_meta, "--out", str(tmp_path / "o")]), "no usable clip", "1 with errors")
    assert tree(tmp_path) == before | {"m.jsonl"}


def test_job_refuses_bad_input_before_ray_starts(synthetic_corpus: CorpusManifest, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    meta = str(synthetic_corpus.root / "meta" / "*.jsonl")
    common = [JOB, "--metadata", meta, "--captioner", "noop"]
    assert_refused(
        run_entry([*common, "--videos", tmp_path / "nope", "--out", tmp_path / "o"]), "--videos not found"
    )
    assert_refused(
        run_entry([*common, "--videos", synthetic_corpus.videos, "--out", a_file]),
        "--out must be a directory",
    )
    assert tree(tmp_path) == {"a_file"}


def test_corpus_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert_refused(
        run_entry(["-m", "synthetic.corpus", "--out", a_file, "--videos", "1"]), "--out must be a directory"
    )
    assert_refused(run_entry(["-m", "synthetic.corpus", "--out", tmp_path / "c", "--width", "321"]), "321")
    assert tree(tmp_path) == {"a_file"}


def test_help_shows_defaults() -> None:
    for args in (["-m", "pipeline", "extract", "--help"], [JOB, "--help"]):
        text = " ".join(run_entry(args).stdout.split())
        assert "sampled frames per clip" in text and "(default: 12)" in text, text
        assert "clips per shard (default: 1000)" in text, text
    text = " ".join(run_entry(["-m", "synthetic.corpus", "--help"]).stdout.split())
    assert "(default: 0)" in text  # --seed


def _terminal_sigint() -> None:
    """Ctrl-C as a terminal delivers it: a shell that runs the tests in the background (`... &`) starts
    them with SIGINT ignored, which the CLI would inherit and never see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, timeout: float = 60) -> None:
    root, pattern = path_glob
    deadline = time.monotonic() + timeout
    while not list(root.glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "nothing written in time"
        time.sleep(0.05)


def test_ctrl_c_in_extract_is_one_line_and_the_rerun_resumes(tmp_path: Path) -> None:
    corpus = generate(tmp_path / "corpus", videos=6, clips_per_video=3, seed=2, downstream_videos=(0, 0, 0))
    out = tmp_path / "out"
    args = extract_args(corpus, corpus.videos, out, "--shard-size", "1", "--workers", "2", "--no-progress")
    # Ctrl-C in a terminal signals the whole foreground process group: the driver and its workers.
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_terminal_sigint,
    )
    _wait_for((out / "shards", "*.stats.json"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert [ln for ln in stderr.splitlines() if ln.strip()][
        -1
    ] == "interrupted: rerun the same command to resume"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert not (out / "summary.json").exists()
    again = run_entry(args)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["counts"] == {"ok": 18}


def test_ctrl_c_in_the_corpus_generator_and_the_rerun(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    args = ["-m", "synthetic.corpus", "--out", str(out), "--videos", "12", "--workers", "2"]
    args += ["--downstream", "0", "0", "0"]
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, preexec_fn=_terminal_sigint,
    )  # fmt: skip
    _wait_for((out / "videos", "*.mp4"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "interrupted: rerun the same command to resume"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not (out / "truth.json").exists()
    again = run_entry(args)  # the half-written corpus is replaced, not refused
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "truth.json").is_file()
