"""clipvip captioner: images -> captions behind one small interface (CONTRACTS section 4).

    import captioner
    cap = captioner.load("ofa", checkpoint="caption_large_best_clean.pt", bpe_dir="BPE/")
    cap = captioner.load("florence2", model_dir="Florence-2-base/", dtype="bfloat16")
    cap.caption([frame_rgb_uint8, ...])  # -> list[str]
    cap.id                                # model, checkpoint, dtype, beam

Built-in names: "ofa", "blip", "florence2", their seeded untrained "<family>-tiny-random" variants, and
"noop" (`describe()` lists them with what each needs). Add a backend with `captioner.register(name, factory)`
or load one by path: `captioner.load("pkg.module:factory", ...)`.
"""

from functools import partial
from typing import Any

from captioner.registry import Captioner, available, describe, load, preflight, register

# The factories import torch / transformers only when their captioner is requested: `import captioner` (the
# job's driver, `--list`) stays light.
_RUN = ("device", "dtype", "batch_size", "beam", "max_len")


def _load_ofa(**options: Any) -> Captioner:
    from captioner.ofa.captioner import load_ofa

    return load_ofa(**options)


def _preflight_ofa(**options: Any) -> int:
    from captioner.ofa.captioner import preflight_ofa

    return preflight_ofa(**options)


def _load_ofa_tiny(**options: Any) -> Captioner:
    from captioner.ofa.captioner import load_tiny_random

    return load_tiny_random(**options)


def _load_noop(**options: Any) -> Captioner:
    from captioner.noop import load_noop

    return load_noop(**options)


def _load_hf(family: str, **options: Any) -> Captioner:
    from captioner.hf.captioner import load as load_hf
    from captioner.hf.families import FAMILIES

    return load_hf(FAMILIES[family], **options)


def _preflight_hf(family: str, **options: Any) -> int | None:
    from captioner.hf.captioner import preflight as preflight_hf
    from captioner.hf.families import FAMILIES

    return preflight_hf(FAMILIES[family], **options)


def _load_hf_tiny(family: str, **options: Any) -> Captioner:
    from captioner.hf.families import FAMILIES
    from captioner.hf.tiny import load_tiny

    return load_tiny(FAMILIES[family], **options)


def _fixed(size: int) -> Any:
    return lambda **_: size


register(
    "ofa",
    _load_ofa,
    needs="--checkpoint caption_large_best_clean.pt (.pt/.pt.xz) and --bpe-dir with OFA's encoder.json, vocab.bpe, dict.txt",
    preflight=_preflight_ofa,
    options=("checkpoint", "bpe_dir", "no_repeat_ngram", *_RUN),
)
register(
    "ofa-tiny-random",
    _load_ofa_tiny,
    needs="nothing: seeded UNTRAINED tiny OFA (3.6M parameters, 96x96), meaningless captions; for tests and demos",
    preflight=_fixed(96),
    options=("seed", *_RUN),
)
for _family, _desc, _size in (
    ("blip", "BLIP (ViT + BERT decoder, 384x384)", 32),
    ("florence2", "Florence-2 (DaViT + BART, 768x768)", 64),
):
    register(
        _family,
        partial(_load_hf, _family),
        needs=f"--model-dir: a local transformers {_desc} caption model directory",
        preflight=partial(_preflight_hf, _family),
        options=("model_dir", *_RUN),
    )
    register(
        f"{_family}-tiny-random",
        partial(_load_hf_tiny, _family),
        needs=f"nothing: seeded UNTRAINED tiny {_desc.split(' (')[0]} ({_size}x{_size} input), meaningless captions; "
        "for tests and demos",
        preflight=_fixed(_size),
        options=("seed", *_RUN),
    )
register(
    "noop",
    _load_noop,
    needs="nothing: returns '' for every image (measures a job's own overhead)",
    options=("batch_size", "device", "dtype"),
)

__all__ = ["Captioner", "available", "describe", "load", "preflight", "register"]
