"""Issue 16, trainer side: trainer/run.sh, trainer.train, trainer.evaluate and trainer.data.retrieval
refuse a user's mistake in one line (exit 2, no traceback) before any work, and write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_checks import REPO, assert_refused, cli_env, run_entry, tree

TINY = REPO / "trainer" / "configs" / "tiny_cpu.yaml"
FINETUNE = REPO / "trainer" / "configs" / "finetune_synthetic_tiny.yaml"


def run_sh(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = cli_env(PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(REPO / "trainer" / "run.sh"), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_run_sh_help_is_clean(tmp_path: Path) -> None:
    proc = run_sh("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "torchrun" in proc.stdout and "set -euo" not in proc.stdout
    assert run_sh(cwd=tmp_path).returncode == 2  # no config: usage, exit 2


def test_run_sh_checks_the_config_once_before_torchrun(tmp_path: Path) -> None:
    typo = run_sh(TINY, "--data.shard", "[x]", cwd=tmp_path)
    line = assert_refused(
        typo, "unknown config key --data.shard", "did you mean --data.shards", "data.batch_size"
    )
    assert "ChildFailedError" not in typo.stderr and "run.sh:" not in typo.stderr, line
    # The documented tiny run with a shard directory that does not exist: one line, no empty run dir.
    missing = run_sh(TINY, "--data.shards", "[demo/out]", "--out_dir", "runs/tiny", cwd=tmp_path)
    assert_refused(missing, "data.shards: demo/out not found", "demo_out/captions")
    assert tree(tmp_path) == set()


def test_train_refuses_bad_paths(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    shards = tmp_path / "shards"
    shards.mkdir()
    base = ["-m", "trainer.train", TINY, "--data.shards", f"[{shards}]"]
    assert_refused(run_entry([*base, "--out_dir", a_file]), "out_dir must be a directory")
    assert_refused(
        run_entry([*base, "--out_dir", tmp_path / "r", "--model.init", a_file]), "not a checkpoint"
    )
    assert_refused(
        run_entry([*base, "--out_dir", tmp_path / "r", "--tokenizer.path", shards]), "lacks vocab.json"
    )
    assert_refused(run_entry(["-m", "trainer.train", tmp_path / "nope.yaml"]), "config not found")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data: [unclosed\n")
    assert_refused(run_entry(["-m", "trainer.train", bad_yaml]), "not valid YAML", "line")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("data:\n  shard: [x]\n")
    assert_refused(run_entry(["-m", "trainer.train", unknown]), "unknown key(s) ['shard']", "known")
    assert tree(tmp_path) == {"a_file", "shards", "bad.yaml", "unknown.yaml"}
    help_text = run_entry(["-m", "trainer.train", "--help"])
    assert help_text.returncode == 0 and "data.shards" in help_text.stdout


@pytest.fixture(scope="module")
def eval_args(tmp_path_factory: pytest.TempPathFactory, synthetic_corpus) -> list[str]:
    """trainer.evaluate on the shared corpus's downstream set (the tiny fine-tuning recipe)."""
    ds = synthetic_corpus.downstream
    return [
        "-m", "trainer.evaluate", "--config", str(FINETUNE), "--num-workers", "0",
        "--eval.videos", str(ds / "videos"),
        "--eval.annotations", json.dumps({
            "train_ids": str(ds / "MSRVTT_train.9k.csv"), "data_json": str(ds / "MSRVTT_data.json"),
            "val_csv": str(ds / "MSRVTT_val.csv"), "test_csv": str(ds / "MSRVTT_JSFUSION_test.csv"),
        }),
    ]  # fmt: skip


def test_evaluate_refuses_bad_input_before_evaluating(eval_args: list[str], tmp_path: Path) -> None:
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    assert_refused(
        run_entry([*eval_args, "--eval.split_typo", "x"]),
        "unknown config key --eval.split_typo",
        "eval.split",
    )
    line = assert_refused(
        run_entry([*eval_args, "--checkpoint", tmp_path / "runs/ft/best"]), "--checkpoint not found"
    )
    assert "tokenizer" not in line
    assert_refused(
        run_entry([*eval_args, "--checkpoint", rnd]), "a binary file of 4096 bytes, not a checkpoint"
    )
    assert_refused(run_entry([*eval_args, "--out", tmp_path]), "--out must be a file name")
    assert_refused(run_entry([*eval_args, "--videos", tmp_path / "none"]), "is not a directory")
    assert tree(tmp_path) == {"random.pt"}


def test_retrieval_check_refuses_missing_files(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"eval:\n  videos: {tmp_path / 'v'}\n  annotations: {{test_csv: {tmp_path / 't.csv'}}}\n")
    assert_refused(
        run_entry(["-m", "trainer.data.retrieval", "check", "--config", cfg]), "eval.videos not found"
    )
    (tmp_path / "v").mkdir()
    assert_refused(
        run_entry(["-m", "trainer.data.retrieval", "check", "--config", cfg]),
        "eval.annotations.test_csv not found",
    )
    args = ["-m", "trainer.data.retrieval", "msrvtt-holdout", "--train-ids", tmp_path / "x.csv"]
    assert_refused(run_entry([*args, "--data-json", cfg, "--out", tmp_path / "o"]), "--train-ids not found")
