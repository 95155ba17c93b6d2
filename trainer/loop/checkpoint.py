"""Training checkpoints: atomic save (temp file + fsync + rename), safe load (``weights_only=True``).

A checkpoint holds everything a resume needs to continue the same run: model, optimizer, GradScaler and
scheduler state, the step, every RNG state (python, numpy legacy, torch CPU and CUDA) and the data
position (per-stream draw counts, see trainer.data.shards), plus the config and the best validation score.
Only plain containers, numbers, strings and tensors are stored, so the weights-only unpickler loads it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_output


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_lists_to_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(x: Any) -> Any:
    return [_tuples_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _lists_to_tuples(x: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, list) else x


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, durable=True) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
