"""Training logs: JSON lines + TensorBoard scalars (rank 0), a progress line with step/s and ETA, and a PNG
of the loss curves at the end."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricLogger:
    """Appends one JSON object per record to ``OUT/log.jsonl`` and mirrors numbers to TensorBoard."""

    def __init__(self, out_dir: Path, tensorboard: bool = True) -> None:
        self.path = out_dir / "log.jsonl"
        out_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the run)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: dict[str, Any], step: int, prefix: str = "train") -> None:
        self._fh.write(json.dumps({"kind": prefix, "step": step, **record}, default=float) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """``step 120/1000 (12.0%) | 3.1 step/s | ETA 4m44s | loss 3.21`` every ``every`` steps."""

    def __init__(self, total: int, start_step: int) -> None:
        self.total, self.start_step, self.t0 = total, start_step, time.monotonic()

    def line(self, step: int, extra: str = "") -> str:
        done = step - self.start_step
        rate = done / max(1e-9, time.monotonic() - self.t0)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        return (
            f"step {step}/{self.total} ({100.0 * step / max(1, self.total):.1f}%) | {rate:.2f} step/s | "
            f"ETA {_fmt_s(eta)}" + (f" | {extra}" if extra else "")
        )


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_losses(log_path: Path, png_path: Path) -> Path | None:
    """Loss terms and total vs step (train records), validation metric if any; matplotlib Agg."""
    records = read_log(log_path)
    train = [r for r in records if r.get("kind") == "train" and "loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A resumed run repeats steps after the last checkpoint; keep the latest record of each step.
    by_step = {r["step"]: r for r in train}
    steps = sorted(by_step)
    terms = sorted({k[len("loss/") :] for r in train for k in r if k.startswith("loss/")})
    val = [r for r in records if r.get("kind") == "val"]
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(12 if val else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, [by_step[s]["loss"] for s in steps], label="total", linewidth=2)
    for t in terms:
        ax.plot(steps, [by_step[s].get(f"loss/{t}", float("nan")) for s in steps], label=t, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (sum of CE terms)")
    ax.set_title("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if val:
        keys = [k for k in ("t2v_R1", "v2t_R1") if k in val[0]]
        for k in keys:
            axes[0][1].plot([r["step"] for r in val], [r[k] for r in val], marker="o", label=k)
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("R@1 (%)")
        axes[0][1].set_title("validation")
        axes[0][1].legend(fontsize=8)
        axes[0][1].grid(alpha=0.3)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
