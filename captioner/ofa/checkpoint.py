"""Safe loading of official OFA (fairseq) checkpoints: no arbitrary unpickling, strict keys, dtype cast.

The official file is a fairseq `trainer.state_dict()`: plain containers, tensors, and `cfg["model"]`, an
`argparse.Namespace` (OFA is a legacy argparse architecture); some files also hold numpy scalars. We load
with `torch.load(weights_only=True)` and allow exactly those extra classes. Any other global in the pickle
(a fairseq/omegaconf class, or `os.system` in a crafted file) is refused with an error naming it, before
anything is unpickled.
"""

from __future__ import annotations

import argparse
import io
import lzma
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from captioner.ofa.config import CheckpointConfigError


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle references a class or function outside the allow-list."""


def _numpy_globals() -> list[Any]:
    """numpy scalars and dtypes: the reconstructor `scalar`, `dtype` and the concrete dtype classes.

    Checkpoints written with numpy 1.x name the reconstructor `numpy.core.multiarray.scalar`, numpy 2 names it
    `numpy._core.multiarray.scalar`; both names are allowed for the same function.
    """
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtype_classes = [type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGUSV"]
    return [
        (scalar, "numpy._core.multiarray.scalar"),
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
        *dtype_classes,
    ]


ALLOWED_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_globals()]


def _global_name(obj: Any) -> str:
    if isinstance(obj, tuple):  # (object, pickled name)
        return obj[1]
    return f"{obj.__module__}.{obj.__qualname__}"


ALLOWED_NAMES = frozenset(_global_name(g) for g in ALLOWED_GLOBALS)


def _open(path: Path) -> io.BytesIO | Path:
    """The checkpoint as a path (plain .pt, loaded memory-mapped) or an in-memory buffer (.xz)."""
    if path.suffix == ".xz":
        try:
            return io.BytesIO(lzma.decompress(path.read_bytes()))
        except lzma.LZMAError as e:
            raise ValueError(f"{path}: not a valid xz file ({e})") from e
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Unpickle a (.pt or .pt.xz) checkpoint allowing only tensors, plain containers and ALLOWED_GLOBALS."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    src = _open(path)
    is_zip = zipfile.is_zipfile(src)
    if isinstance(src, io.BytesIO):
        src.seek(0)  # is_zipfile moves the stream
    if is_zip:
        # Lists every global the pickle references without executing anything; refuse before loading.
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(src)
        refused = sorted(set(unsafe) - ALLOWED_NAMES)
        if refused:
            raise UnsafeCheckpointError(
                f"{path}: refusing to load, the pickle references {', '.join(refused)} "
                f"(allowed beyond tensors and plain containers: argparse.Namespace, numpy scalars and dtypes)"
            )
    if isinstance(src, io.BytesIO):
        src.seek(0)
    try:
        # Legacy (non-zip) files cannot be scanned; the weights-only unpickler refuses unknown globals itself.
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            if isinstance(src, Path) and is_zip:
                ckpt = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
            else:
                ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise UnsafeCheckpointError(
                f"{path}: refusing to load, the pickle references {found.group(1)}"
            ) from e
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        reason = detail.group(1).strip() if detail else "unsupported pickle content"
        raise UnsafeCheckpointError(f"{path}: refused by the weights-only unpickler: {reason}") from e
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a readable torch checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not an OFA/fairseq checkpoint (no 'model' entry)")
    return ckpt


def checkpoint_args(ckpt: Mapping[str, Any]) -> Any:
    """The model arguments: cfg["model"] (fairseq >= 0.10) or the legacy top-level `args`."""
    cfg = ckpt.get("cfg")
    if isinstance(cfg, Mapping) and cfg.get("model") is not None:
        return cfg["model"]
    if ckpt.get("args") is not None:
        return ckpt["args"]
    raise CheckpointConfigError("checkpoint has neither cfg['model'] nor args")


# Buffers we recompute; a stored copy must equal ours (it is the oracle for the bucket formulas).
RECOMPUTED_BUFFERS = (
    "encoder.version",
    "encoder.token_rp_bucket",
    "encoder.image_rp_bucket",
    "decoder.version",
    "decoder.token_rp_bucket",
    "decoder.image_rp_bucket",
    "decoder.image_position_idx",
)
TIED = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")  # aliases of encoder.embed_tokens


def load_official_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Strict load: every parameter present with the right shape; buffers recomputed and cross-checked."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and k not in RECOMPUTED_BUFFERS and k not in TIED]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise CheckpointConfigError(
            f"state dict does not match the OFA caption model: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
    emb = sd["encoder.embed_tokens.weight"]
    for key in TIED:
        if key in sd and not torch.equal(sd[key], emb):
            raise CheckpointConfigError(
                f"{key} differs from encoder.embed_tokens.weight (embeddings must be tied)"
            )
    for key in RECOMPUTED_BUFFERS:
        if key in sd and key != "encoder.version" and key != "decoder.version":
            if not torch.equal(sd[key].to(own[key].device), own[key]):
                raise CheckpointConfigError(f"stored buffer {key} differs from the recomputed table")
    bad_shapes = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if bad_shapes:
        raise CheckpointConfigError("shape mismatch: " + "; ".join(bad_shapes[:10]))
    params = {k: v for k, v in sd.items() if k not in RECOMPUTED_BUFFERS and k not in TIED}
    with torch.no_grad():
        targets = dict(model.named_parameters()) | dict(model.named_buffers())
        for k, v in params.items():
            targets[k].copy_(v)  # copy_ casts fp16/fp32 to the model's dtype
