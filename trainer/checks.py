"""What `trainer.train`, `trainer/run.sh` and `trainer.evaluate` check before any work or write.

Each check raises `pipeline.cli.UserError` with one line (the CLIs print it as `error: ...`, exit 2):
the config (file, YAML, keys, values), every input path of the configured run (shards, retrieval videos
and annotations, initial weights, tokenizer), the output paths, and a checkpoint, which is opened with
the safe reader and refused with what the file is and what was expected.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import NoReturn

import yaml

from pipeline.cli import UserError, existing_dir, existing_file, kind_of, output_dir
from trainer.config import RetrievalDataConfig, TrainConfig, load_config
from trainer.model.weights import CheckpointError, read_checkpoint

CHECKPOINT_KINDS = (
    "a run's model/ or best/ directory, a Hugging Face CLIP directory (config.json + model.safetensors "
    "or pytorch_model.bin), an OpenAI CLIP .pt, or a CLIP-ViP .pt"
)


def load_config_checked(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """The config, or UserError for a missing file, bad YAML, an unknown key or a bad value."""
    if path is not None:
        existing_file(path, "config")
    try:
        return load_config(path, overrides)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def check_checkpoint(path: str | Path, what: str) -> str:
    """The checkpoint's kind ("hf", "openai", "clipvip", "clipvip-saved", ...) after reading it with the
    safe reader; UserError saying what is at `path` instead."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p} (expected {CHECKPOINT_KINDS})")
    try:
        kind, state, _, _ = read_checkpoint(p)
    except (CheckpointError, FileNotFoundError, ValueError) as e:  # ValueError: e.g. a bad config.json
        reason = str(e).replace(f"{p}: ", "").split(" (weights_only")[0][:120]
        raise UserError(
            f"{what} {p} is {_content_of(p)}, not a checkpoint ({reason}); expected {CHECKPOINT_KINDS}"
        ) from None
    if not state:
        raise UserError(f"{what} {p} holds no tensors; expected {CHECKPOINT_KINDS}")
    return kind


def _content_of(p: Path) -> str:
    """What a file looks like from its first bytes ("a text file of 120 bytes"), or kind_of for the rest."""
    if not p.is_file():
        return kind_of(p)
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04"):
        what = "a zip archive"
    elif head[:1] == b"\x80":
        what = "a Python pickle"
    elif not head:
        what = "an empty file"
    else:
        try:
            head.decode("utf-8")
            what = "a text file"
        except UnicodeDecodeError:
            what = "a binary file"
    return f"{what} of {p.stat().st_size} bytes"


def check_tokenizer_dir(path: str | Path, what: str) -> None:
    d = existing_dir(path, what)
    missing = [n for n in ("vocab.json", "merges.txt") if not (d / n).is_file()]
    if missing:
        raise UserError(f"{what} {d} lacks {' and '.join(missing)} (a CLIP tokenizer directory has both)")


def check_retrieval_paths(data: RetrievalDataConfig, section: str) -> None:
    if not data.videos:
        _missing(f"{section}.videos")
    existing_dir(data.videos, f"{section}.videos")
    if not data.annotations:
        _missing(f"{section}.annotations")
    for role, path in data.annotations.items():
        existing_file(path, f"{section}.annotations.{role}")


def _missing(key: str) -> NoReturn:
    raise UserError(f"{key} is not set (set it in the config or pass --{key} ...)")


def check_shard_sources(specs: list[str]) -> None:
    if not specs:
        _missing("data.shards")
    for spec in specs:
        if any(ch in spec for ch in "*?["):
            if not glob.glob(spec):
                raise UserError(f"data.shards: {spec} matches no file")
        elif not Path(spec).exists():
            raise UserError(
                f"data.shards: {spec} not found (a pipeline output directory, a shard .tar or a glob; "
                "`make demo` writes demo_out/captions)"
            )


def check_train_inputs(cfg: TrainConfig, read_init: bool = True) -> None:
    """Every input and output of a training run, before anything is created (see the module doc)."""
    output_dir(cfg.out_dir, "out_dir")
    if cfg.data.kind == "shards":
        check_shard_sources(cfg.data.shards)
    else:
        check_retrieval_paths(cfg.data.retrieval, "data.retrieval")
    if cfg.eval_every > 0:
        check_retrieval_paths(cfg.eval, "eval")
    if cfg.model.init and read_init:
        check_checkpoint(cfg.model.init, "model.init")
    if cfg.tokenizer.path:
        check_tokenizer_dir(cfg.tokenizer.path, "tokenizer.path")
    if cfg.resume not in ("auto", "none"):
        existing_file(cfg.resume, "resume")
    if cfg.data.exclude_keys:
        existing_file(cfg.data.exclude_keys, "data.exclude_keys")
