"""clipvip captioner: images -> captions behind one small interface (CONTRACTS section 4).

    import captioner
    cap = captioner.load("ofa", checkpoint="caption_large_best_clean.pt", bpe_dir="BPE/")
    cap.caption([frame_rgb_uint8, ...])  # -> list[str]
    cap.id                                # model, checkpoint hash, dtype, beam

Built-in names: "ofa", "ofa-tiny-random" (seeded, untrained), "noop". Add a backend with
`captioner.register(name, factory)` or load one by path: `captioner.load("pkg.module:factory", ...)`.
"""

from typing import Any

from captioner.registry import Captioner, available, load, register


def _load_ofa(**options: Any) -> Captioner:  # imports torch only when an OFA captioner is requested
    from captioner.ofa.captioner import load_ofa

    return load_ofa(**options)


def _load_tiny(**options: Any) -> Captioner:
    from captioner.ofa.captioner import load_tiny_random

    return load_tiny_random(**options)


def _load_noop(**options: Any) -> Captioner:
    from captioner.noop import load_noop

    return load_noop(**options)


register("ofa", _load_ofa)
register("ofa-tiny-random", _load_tiny)
register("noop", _load_noop)

__all__ = ["Captioner", "available", "load", "register"]
