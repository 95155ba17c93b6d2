"""Text-video retrieval evaluation (MSR-VTT, DiDeMo, LSMDC, ActivityNet, MSVD).

``python -m trainer.evaluate --config CFG.yaml [--checkpoint PATH] [--split test] [--out results.json]``
encodes every video of the split once (uniform frames, CLIP preprocessing), every query text once, and
reports text->video and video->text R@1/5/10, MdR and MnR, plain and with DSL (CLIPVIP.md §6). With no
``--checkpoint`` the config's initial weights are evaluated (zero-shot). Missing or undecodable videos are
excluded and counted; the result says how many queries were evaluated.

The evaluation itself lives in ``trainer.eval.retrieval`` (``evaluate_model``, also the training loop's
validation hook); this module is its command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import load_config
from trainer.eval.retrieval import evaluate_model, format_table
from trainer.model.build import build_model
from trainer.model.tokenizer import load_clip_tokenizer

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- CLI


def load_model_for_eval(cfg: Any, checkpoint: str | None, tokenizer: Any, device: torch.device) -> nn.Module:
    """``checkpoint`` (a run's ``model/``/``best/`` dir, HF CLIP dir, OpenAI CLIP .pt or CLIP-ViP checkpoint)
    or, when None, the config's initial model exactly as training builds it (``model.init`` weights, or the
    seeded tiny random model), i.e. the zero-shot baseline."""
    torch.manual_seed(cfg.seed)  # the training run seeds the same way before building its model
    return build_model(cfg, tokenizer, init=checkpoint).to(device)


def _find_tokenizer(explicit: str | None, cfg: Any, checkpoint: str | None) -> Path | None:
    candidates = [
        explicit,
        cfg.tokenizer.path,
        checkpoint,
        cfg.model.init,
        str(Path(cfg.out_dir) / "tokenizer"),
    ]
    for c in candidates:
        if c and (Path(c) / "vocab.json").is_file():
            return Path(c)
        if c and Path(c).is_file() and (Path(c).parent / "vocab.json").is_file():
            return Path(c).parent
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m trainer.evaluate", allow_abbrev=False, description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--config", required=True, type=Path, help="fine-tuning YAML (its eval, model, tokenizer)")
    p.add_argument(
        "--checkpoint", default=None, help="model dir / CLIP weights; default: the config's model.init"
    )
    p.add_argument("--split", default=None, help="val or test (default: the config's eval.split)")
    p.add_argument("--videos", default=None, help="videos root (overrides eval.videos)")
    p.add_argument(
        "--tokenizer", default=None, help="dir with vocab.json + merges.txt (default: from the config)"
    )
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    # anything else is a trainer.train-style `--key value` config override (e.g. --model.video_head clip2video)
    args, overrides = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = load_config(args.config, overrides)
    ecfg = cfg.eval
    for name, value in (("split", args.split), ("videos", args.videos), ("batch_size", args.batch_size),
                        ("num_workers", args.num_workers)):  # fmt: skip
        if value is not None:
            setattr(ecfg, name, value)
    tok_dir = _find_tokenizer(args.tokenizer, cfg, args.checkpoint)
    if tok_dir is None:
        p.error("no tokenizer found: pass --tokenizer DIR (vocab.json + merges.txt) or set tokenizer.path")
    tokenizer = load_clip_tokenizer(tok_dir)
    device = torch.device(args.device)
    model = load_model_for_eval(cfg, args.checkpoint, tokenizer, device)
    result = evaluate_model(model, tokenizer, ecfg, device)
    result["checkpoint"] = args.checkpoint or cfg.model.init or "(random init)"
    print(format_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result.get("metrics") else 1


if __name__ == "__main__":
    sys.exit(main())
