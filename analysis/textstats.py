"""Caption text statistics for the captioner comparison: length, vocabulary (distinct-1/2), and
BLEU-4 / CIDEr-D through pycocoevalcap (the COCO caption evaluation code, as published on PyPI).

Tokenisation: pycocoevalcap's PTBTokenizer runs Stanford CoreNLP (Java), which this project does not
require, so captions are tokenised here the way its output looks: lower case, words of letters and
digits (an apostrophe inside a word kept), punctuation dropped. METEOR and SPICE (Java) are not used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


@dataclass
class TextStats:
    captions: int
    empty: int
    words_mean: float
    words_median: float
    vocabulary: int  # distinct words over all captions
    distinct_1: float  # distinct unigrams / all unigrams (Li et al., 2016)
    distinct_2: float  # distinct bigrams / all bigrams
    lengths: list[int]


def distinct_n(token_lists: Sequence[list[str]], n: int) -> float:
    grams = [tuple(t[i : i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_stats(captions: Sequence[str]) -> TextStats:
    toks = [tokenize(c) for c in captions]
    lengths = [len(t) for t in toks]
    return TextStats(
        captions=len(captions),
        empty=sum(1 for n in lengths if n == 0),
        words_mean=float(np.mean(lengths)) if lengths else 0.0,
        words_median=float(np.median(lengths)) if lengths else 0.0,
        vocabulary=len({w for t in toks for w in t}),
        distinct_1=distinct_n(toks, 1),
        distinct_2=distinct_n(toks, 2),
        lengths=lengths,
    )


def caption_scores(hyps: Mapping[str, str], refs: Mapping[str, Sequence[str]]) -> dict[str, float | int]:
    """Corpus BLEU-4 and CIDEr-D of `hyps` (clip -> caption) against `refs` (clip -> references), over
    the clips that have both. CIDEr-D's document frequencies come from these references, as in the
    COCO evaluation, so values from a few clips are not comparable with published ones."""
    ids = sorted(k for k in hyps if refs.get(k))
    if not ids:
        return {"clips": 0}
    res = {k: [" ".join(tokenize(hyps[k]))] for k in ids}
    gts = {k: [" ".join(tokenize(r)) for r in refs[k]] for k in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"clips": len(ids), "bleu4": float(bleu[3]), "cider_d": float(cider)}
