"""CLIP BPE tokenizer over local `vocab.json` + `merges.txt` files (real CLIP format).

`load_clip_tokenizer(dir)` wraps transformers' `CLIPTokenizer` built from explicit local files (never a hub
id: offline, transformers silently returns a 2-token dummy tokenizer for an unknown id) and checks the
vocabulary size. `build_tiny_tokenizer(texts, out_dir)` learns a small BPE in the same file format for
tests and the demo: 256 byte symbols, the same 256 with `</w>`, the learned merges, then
`<|startoftext|>` and `<|endoftext|>`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import regex
import torch

# GPT-2/CLIP byte -> printable unicode table; re-exported for the tiny-BPE builder and tests.
from transformers.convert_slow_tokenizer import bytes_to_unicode

from pipeline.atomic import write_text_atomic
from trainer.model.config import TINY_VOCAB_SIZE

CLIP_VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MERGES_HEADER = "#version: 0.2"
# CLIP's pre-tokenisation pattern (applied after whitespace clean-up and lower-casing).
_WORD_RE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
DEFAULT_MAX_LENGTH = 77
NUM_BASE_SYMBOLS = 512  # 256 byte symbols + 256 with </w>


class ClipTokenizer:
    """Callable: texts -> (input_ids [N, L] long, attention_mask [N, L] long), padded to max_length with EOT."""

    def __init__(
        self, vocab: dict[str, int], merges: list[tuple[str, str]], max_length: int = DEFAULT_MAX_LENGTH
    ):
        from transformers import CLIPTokenizer

        self.vocab_size = len(vocab)
        self.max_length = max_length
        self._tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges))  # type: ignore[arg-type]  # tuples are accepted
        if len(self._tok) != self.vocab_size:
            raise ValueError(f"tokenizer has {len(self._tok)} entries, vocab.json has {self.vocab_size}")
        self.bos_id = vocab[BOS_TOKEN]
        self.eot_id = vocab[EOS_TOKEN]
        self.pad_id = self.eot_id  # as HF CLIP: pad with EOT; pooling uses the first EOT

    def __len__(self) -> int:
        return self.vocab_size

    def __call__(
        self, texts: str | Sequence[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        n = max_length or self.max_length
        if n < 2:
            raise ValueError("max_length must be >= 2 (start and end tokens)")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:  # a missing caption must not silently become the text "None"
            raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        if not texts:
            return torch.zeros(0, n, dtype=torch.long), torch.zeros(0, n, dtype=torch.long)
        enc = self._tok(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=n,
            return_tensors="pt",
        )
        return enc["input_ids"].long(), enc["attention_mask"].long()

    def encode(self, text: str) -> list[int]:
        """Token ids without start/end tokens and without truncation."""
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Iterable[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=True))


def read_vocab_merges(directory: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    directory = Path(directory)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    for p in (vocab_path, merges_path):
        if not p.is_file():
            raise FileNotFoundError(f"CLIP tokenizer file missing: {p} (need vocab.json and merges.txt)")
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    merges: list[tuple[str, str]] = []
    for i, line in enumerate(merges_path.read_text(encoding="utf-8").splitlines()):
        if not line or (i == 0 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{merges_path}:{i + 1}: expected two symbols, got {line!r}")
        merges.append((parts[0], parts[1]))
    return vocab, merges


def load_clip_tokenizer(
    directory: str | Path, expected_size: int | None = None, max_length: int = DEFAULT_MAX_LENGTH
) -> ClipTokenizer:
    """Load from a local dir with vocab.json + merges.txt. Checks the CLIP layout (512 + merges + 2 entries)
    and, if given, `expected_size` (49408 for OpenAI CLIP)."""
    vocab, merges = read_vocab_merges(directory)
    layout_size = NUM_BASE_SYMBOLS + len(merges) + 2
    if len(vocab) != layout_size:
        raise ValueError(f"{directory}: vocab.json has {len(vocab)} entries, merges imply {layout_size}")
    for special in (BOS_TOKEN, EOS_TOKEN):
        if special not in vocab:
            raise ValueError(f"{directory}: vocab.json lacks {special}")
    if expected_size is not None and len(vocab) != expected_size:
        raise ValueError(f"{directory}: tokenizer size {len(vocab)} != expected {expected_size}")
    return ClipTokenizer(vocab, merges, max_length=max_length)


def _words(text: str) -> list[str]:
    text = " ".join(text.split()).lower()
    return _WORD_RE.findall(text)


def learn_bpe(texts: Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """Learn `num_merges` BPE merges over CLIP's byte-level, end-of-word-marked words.

    When the corpus runs out of pairs, deterministic filler merges (pairs of letters/digits) complete the
    list, so the vocabulary size is always 512 + num_merges + 2.
    """
    byte_map = bytes_to_unicode()
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        for word in _words(str(text)):
            symbols = [byte_map[b] for b in word.encode("utf-8")]
            symbols[-1] += END_OF_WORD
            counts[tuple(symbols)] += 1
    known = set(byte_map.values()) | {c + END_OF_WORD for c in byte_map.values()}
    merges: list[tuple[str, str]] = []
    words = dict(counts)
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word_syms, c in words.items():
            for a, b in zip(word_syms, word_syms[1:], strict=False):
                # A pair whose concatenation already exists (e.g. "a"+"bc" vs "ab"+"c") would duplicate a token.
                if a + b not in known:
                    pairs[(a, b)] += c
        if not pairs:
            break
        # Most frequent pair; ties broken by the pair itself for determinism.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        known.add(best[0] + best[1])
        words = {_merge_word(s, best): c for s, c in words.items()}
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    filler = ((a, b) for a in alphabet for b in alphabet + "".join(c + END_OF_WORD for c in alphabet))
    for a, b in filler:
        if len(merges) >= num_merges:
            break
        if a + b not in known:
            merges.append((a, b))
            known.add(a + b)
    if len(merges) < num_merges:
        raise ValueError(f"cannot produce {num_merges} merges")
    return merges


def _merge_word(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def build_tiny_tokenizer(
    texts: Iterable[str], out_dir: str | Path, num_merges: int = TINY_VOCAB_SIZE - NUM_BASE_SYMBOLS - 2
) -> Path:
    """Write vocab.json + merges.txt (real CLIP format, small content) learned from `texts`; returns out_dir.

    The default gives `TINY_VOCAB_SIZE` entries, the text vocabulary of `tiny_config()`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merges = learn_bpe(texts, num_merges)
    byte_chars = list(bytes_to_unicode().values())
    tokens = (
        byte_chars
        + [c + END_OF_WORD for c in byte_chars]
        + [a + b for a, b in merges]
        + [BOS_TOKEN, EOS_TOKEN]
    )
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise AssertionError("duplicate tokens in the learned vocabulary")
    write_text_atomic(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_text_atomic(out / "merges.txt", "\n".join([MERGES_HEADER] + [f"{a} {b}" for a, b in merges]) + "\n")
    return out
