"""Training configuration: a dataclass tree loaded from YAML, with `--key value` / `--a.b value` overrides.

Every default lives here once, the retrieval data and evaluation sections included. This module is a leaf:
it imports nothing else from the project, so every other part of the trainer can import it. Unknown keys
are errors, so a typo in a YAML file or on the command line cannot be ignored.
Override values are parsed as YAML scalars (`--optim.lr 1e-5`, `--data.shards '[a, b]'`); `--key` may be a
full dotted path, a top-level key or a leaf name that is unique in the tree (`--lr 1e-5`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Mode = Literal["sentence", "paragraph"]

# The training losses of CLIP-ViP's Omnisource Cross-modal Learning and the inputs each one needs.
LOSS_NAMES = ("vs", "vs_fc", "vs_vc", "vs_vc_fc", "vsc", "vsc_fc")
_NEEDS_CAPTION = {"vs_fc", "vs_vc", "vs_vc_fc", "vsc", "vsc_fc"}
_NEEDS_FRAME = {"vs_fc", "vs_vc_fc", "vsc_fc"}


def check_loss_name(name: str) -> None:
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")


def needs_caption(name: str) -> bool:
    """Whether loss ``name`` uses caption features."""
    check_loss_name(name)
    return name in _NEEDS_CAPTION


def needs_frame(name: str) -> bool:
    """Whether loss ``name`` uses middle-frame image features."""
    check_loss_name(name)
    return name in _NEEDS_FRAME


# ------------------------------------------------------------------------------ retrieval data and eval


@dataclass
class RetrievalDataConfig:
    """Where a benchmark's files are and how to read them (one place for these defaults).

    ``annotations`` names the files by role; the roles each dataset needs are listed in
    ``trainer.data.retrieval.load_split``.
    """

    dataset: str = "msrvtt"
    videos: str = ""  # root directory searched recursively by file stem
    annotations: dict[str, str] = field(default_factory=dict)
    mode: Mode | None = None  # None -> the benchmark's protocol (paragraph for didemo/activitynet)
    num_frames: int = 12
    image_size: int = 224
    max_text_len: int = 50


def default_mode(dataset: str) -> Mode:
    return "paragraph" if dataset in ("didemo", "activitynet") else "sentence"


def retrieval_config(obj: Any) -> RetrievalDataConfig:
    """Accept a ``RetrievalDataConfig``, a mapping, or any object with the same attribute names."""
    if isinstance(obj, RetrievalDataConfig):
        return obj
    if isinstance(obj, dict):
        src = obj
    else:
        src = {k: getattr(obj, k) for k in RetrievalDataConfig.__dataclass_fields__ if hasattr(obj, k)}
    known = {k: v for k, v in src.items() if k in RetrievalDataConfig.__dataclass_fields__}
    cfg = RetrievalDataConfig(**known)
    cfg.annotations = dict(cfg.annotations or {})
    return cfg


@dataclass
class EvalConfig(RetrievalDataConfig):
    """Retrieval data (see ``RetrievalDataConfig``) plus how to run the evaluation."""

    split: str = "val"  # "val" for model selection during training; "test" only for the final report
    batch_size: int = 16  # videos per forward pass
    text_batch_size: int = 256
    num_workers: int = 2  # decoding processes
    max_videos: int = 0  # >0: evaluate only the first N videos (quick validation); 0 = all
    dsl_temperature: float = 100.0


def eval_config(obj: Any) -> EvalConfig:
    """An ``EvalConfig`` from itself, a mapping, or any object with the same attribute names."""
    if isinstance(obj, EvalConfig):
        return obj
    base = retrieval_config(obj)
    src = obj if isinstance(obj, dict) else {k: getattr(obj, k) for k in EvalConfig.__dataclass_fields__
                                             if hasattr(obj, k)}  # fmt: skip
    extra = {k: src[k] for k in EvalConfig.__dataclass_fields__ if k in src and k not in base.__dict__}
    return EvalConfig(**base.__dict__, **extra)


# ------------------------------------------------------------------------------------------- training


@dataclass
class ModelSection:
    # "" -> random init (tiny model when `tiny`); else a local HF CLIP dir, an OpenAI CLIP .pt, an official
    # CLIP-ViP checkpoint, or a previous run's `model/` or `best/` dir (trainer.model.from_pretrained).
    init: str = ""
    tiny: bool = False
    tiny_overrides: dict[str, Any] = field(default_factory=dict)  # trainer.model.tiny_config(**overrides)
    num_proxies: int = 3
    num_frames: int = 12  # temporal table length
    video_head: str = "vip"
    # CLIP2VideoHead keyword arguments for video_head "clip2video" (defaults live in that class: TDB only,
    # tab false); e.g. {tab: true} adds the Temporal Alignment Block (the paper's full model; then the
    # loss must be "vs"). None keeps the checkpoint's value.
    clip2video: dict[str, Any] | None = None
    # None keeps the checkpoint's value (fine-tuning from CLIP-ViP); from plain CLIP the loader sets 4.60.
    logit_scale_init: float | None = None
    grad_checkpointing: bool = False


@dataclass
class TokenizerSection:
    # Dir with vocab.json + merges.txt (CLIP format). "" -> `init` dir if it has them; with a tiny model
    # and no path, a tiny BPE is learned from the shard texts into OUT/tokenizer.
    path: str = ""
    tiny_merges: int = 254  # 512 bytes + 254 merges + 2 specials = tiny_config's 768 entries


@dataclass
class DataSection:
    kind: str = "shards"  # "shards" (pipeline WebDataset shards) or "retrieval" (downstream fine-tuning)
    # Pipeline OUT dirs (complete shards are found in OUT/shards) and/or .tar paths or globs.
    shards: list[str] = field(default_factory=list)
    batch_size: int = 32  # per process (the paper: 32 for B/32, 16 for B/16)
    num_workers: int = 2
    num_frames: int = 12
    frame_source: str = "auto"  # "auto": K.mp4 when the sample has one, else K.fNN.jpg; "jpg"; "mp4"
    jitter: bool = True  # CLIP-ViP's random endpoint jitter when sampling from K.mp4
    max_text_len: int = 70
    vid_txt: str = "subtitle"  # text paired with the video: "subtitle" or "caption" (official vid_txt)
    missing_caption: str = "mask"  # "mask": keep the sample, caption terms skip it; "drop": skip the sample
    shards_in_flight: int = 4  # shards each worker interleaves (samples of one video sit together in a shard)
    exclude_keys: str = ""  # file with one sample key per line to leave out (held-out clips)
    # >0: per-worker cache (MiB) of each sample's decoded, squashed frames, so a redraw only samples positions
    # (same tensors). Pays off when each clip is drawn many times (small sets, fine-tuning, the demo).
    decode_cache_mb: int = 0
    retrieval: RetrievalDataConfig = field(default_factory=RetrievalDataConfig)  # for kind == "retrieval"


@dataclass
class OptimSection:
    lr: float = 5e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.05
    # "norms_biases": biases, every LayerNorm parameter and logit_scale skip decay (our default);
    # "official": CLIP-ViP's name list, which misses HF CLIP's layer norms (official code).
    no_decay: str = "norms_biases"
    lr_mul: float = 1.0  # LR multiplier for parameters whose name starts with lr_mul_prefix
    lr_mul_prefix: str = ""  # e.g. "logit_scale" (DiDeMo B/16: lr_mul 10)
    grad_norm: float = 5.0  # 0 disables clipping


@dataclass
class ScheduleSection:
    kind: str = "cosine"  # "cosine" | "linear" | "constant"
    warmup_ratio: float = 0.01
    min_lr: float = 1e-8  # floor of the official get_lr_sched
    epochs: float = 5.0
    total_steps: int = 0  # >0 overrides epochs: ceil(epochs * dataset_size / global batch)
    dataset_size: int = 0  # 0 -> counted from the shards / training set


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    seed: int = 42
    loss: str = "vsc_fc"
    device: str = "auto"  # "auto" | "cuda" | "cpu"
    precision: str = "auto"  # "auto" (bf16 on CUDA if supported, else fp16; fp32 on CPU) | fp32 | bf16 | fp16
    log_every: int = 10
    save_every: int = 500
    eval_every: int = 0  # 0: no validation during training
    select_metric: str = "t2v_R1"  # key of evaluate_model's result to pick the best checkpoint (higher wins)
    resume: str = "auto"  # "auto": OUT/checkpoints/last.pt if present; "none"; or a checkpoint path
    max_steps: int = 0  # >0: stop after this many steps (the schedule still spans total_steps)
    find_unused_parameters: bool = False
    # >0: torch intra-op threads per process. On a shared or small CPU, 1 avoids thread oversubscription
    # (measured: a tiny model's step ran 15x slower with 2 threads than with 1 on a loaded 2-core box).
    cpu_threads: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: TrainConfig) -> None:
    def choice(name: str, value: str, options: tuple[str, ...]) -> None:
        if value not in options:
            raise ValueError(f"{name} must be one of {options}, got {value!r}")

    choice("loss", cfg.loss, LOSS_NAMES)
    choice("device", cfg.device, ("auto", "cuda", "cpu"))
    choice("precision", cfg.precision, ("auto", "fp32", "bf16", "fp16"))
    choice("data.kind", cfg.data.kind, ("shards", "retrieval"))
    choice("data.frame_source", cfg.data.frame_source, ("auto", "jpg", "mp4"))
    choice("data.vid_txt", cfg.data.vid_txt, ("subtitle", "caption"))
    choice("data.missing_caption", cfg.data.missing_caption, ("mask", "drop"))
    choice("optim.no_decay", cfg.optim.no_decay, ("norms_biases", "official"))
    choice("schedule.kind", cfg.schedule.kind, ("cosine", "linear", "constant"))
    if cfg.data.batch_size < 1:
        raise ValueError("data.batch_size must be >= 1")
    if cfg.data.decode_cache_mb < 0:
        raise ValueError("data.decode_cache_mb must be >= 0 (0: no decode cache)")
    if cfg.model.clip2video and cfg.model.video_head != "clip2video":
        raise ValueError("model.clip2video is set but model.video_head is not 'clip2video'")
    if (cfg.model.clip2video or {}).get("tab") and cfg.loss != "vs":
        raise ValueError(
            f"CLIP2Video's TAB (model.clip2video.tab) trains with loss 'vs' only, got {cfg.loss!r}"
        )
    if len(cfg.optim.betas) != 2:
        raise ValueError("optim.betas must have two values")
    if not 0.0 <= cfg.schedule.warmup_ratio < 1.0:
        raise ValueError("schedule.warmup_ratio must be in [0, 1)")


# ------------------------------------------------------------------------------------------- loading


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Build a value of type ``tp`` from plain YAML data (nested dataclasses recursively)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if tp is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)  # YAML 1.1 reads "1e-5" (no dot) as a string
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") if args else v for i, v in enumerate(value)]
    if origin is dict and not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.append(path)  # a whole section can be given as a mapping (--eval '{split: val, ...}')
            out += _leaf_paths(tp, path + ".")
        else:
            out.append(path)
    return out


def config_keys() -> list[str]:
    """Every key a ``--key value`` override may name, for ``--help``."""
    return _leaf_paths(TrainConfig)


def _resolve_key(key: str) -> str:
    leaves = _leaf_paths(TrainConfig)
    if key in leaves:
        return key
    matches = [p for p in leaves if p.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"unknown config key --{key}; {_known_near(key, leaves)}")
    raise ValueError(f"ambiguous config key --{key}: {matches}")


def _known_near(key: str, leaves: list[str]) -> str:
    """The keys a typo most likely meant, and the known keys of its section (all keys: --help)."""
    close = difflib.get_close_matches(key, leaves + [p.rsplit(".", 1)[-1] for p in leaves], n=3, cutoff=0.6)
    section = key.split(".")[0] + "." if "." in key else None
    known = [p for p in leaves if section and p.startswith(section)] or [p for p in leaves if "." not in p]
    hint = f"did you mean {' or '.join('--' + c for c in dict.fromkeys(close))}? " if close else ""
    where = f"{section[:-1]} keys" if section and known[0].startswith(section) else "top-level keys"
    return f"{hint}known {where}: {', '.join(known)} (every key: python -m trainer.train --help)"


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--a.b", "1", "--c=x"]`` -> nested dict ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"expected --key value, got {arg!r}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ValueError(f"--{arg[2:]} needs a value")
            key, raw = arg[2:], args[i + 1]
            i += 2
        path = _resolve_key(key.replace("-", "_"))
        node = out
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        value = yaml.safe_load(raw) if raw != "" else ""
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            value = _merge(node[parts[-1]], value)
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file (optional) + CLI overrides -> validated TrainConfig."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        data = loaded or {}
    data = _merge(data, parse_overrides(overrides or []))
    return from_dict(TrainConfig, data)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
