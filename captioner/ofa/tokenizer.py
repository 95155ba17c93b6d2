"""OFA text side: GPT-2 byte-level BPE + the fairseq dictionary, and a tiny self-contained word vocabulary.

Encoding follows OFA's `encode_text`: GPT-2 BPE ids, each mapped through the fairseq dictionary built from
`dict.txt` (index = 4 + line number; dict.txt is not in GPT-2 id order). Decoding follows `decode_fn`:
dictionary ids -> GPT-2 ids -> bytes -> UTF-8. Ids that are not text (bos, pad, eos, unk, <mask>, image codes,
location bins, placeholder words) are dropped; fairseq would print "<unk>" for unk, which never helps a caption.
The BPE files are third-party data the user brings with the checkpoint (OFA's `utils/BPE/`).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import regex

from captioner.ofa.interface import BOS, EOS, PAD, UNK

CAPTION_PROMPT = " what does the image describe?"
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BPE_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other runs, whitespace.
_GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
_PUNCT = str.maketrans("", "", string.punctuation)


class Tokenizer(Protocol):
    """What the captioner needs from a tokenizer: dictionary ids in, text out."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def source_ids(tokenizer: Tokenizer, prompt: str = CAPTION_PROMPT) -> list[int]:
    """The encoder input of the caption task: bos + encode(prompt) + eos."""
    return [BOS, *tokenizer.encode(prompt), EOS]


def caption_text(decoded: str) -> str:
    """OFA's eval_caption post-processing: drop every ASCII punctuation character, strip whitespace."""
    return decoded.translate(_PUNCT).strip()


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (so BPE never sees whitespace/control bytes)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


class GPT2BPE:
    """GPT-2 byte-level BPE from `encoder.json` (token -> id) and `vocab.bpe` (merges, best first)."""

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]]) -> None:
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_files(cls, encoder_json: Path, vocab_bpe: Path) -> GPT2BPE:
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
        merges = [
            tuple(line.split()) for line in lines[1:] if line.strip() and not line.startswith("#version")
        ]
        return cls(encoder, [(a, b) for a, b in merges])

    def _bpe(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _GPT2_SPLIT.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(mapped))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(self.decoder[i] for i in ids)
        return bytes(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")


class OFATokenizer:
    """GPT-2 BPE + OFA's fairseq dictionary (specials, dict.txt, <mask>, image codes, location bins)."""

    def __init__(
        self, bpe: GPT2BPE, dict_symbols: Sequence[str], code_dict_size: int = 8192, num_bins: int = 1000
    ):
        self.bpe = bpe
        self.symbols = [*SPECIALS, *dict_symbols, "<mask>"]
        self.symbols += [f"<code_{i}>" for i in range(code_dict_size)] + [
            f"<bin_{i}>" for i in range(num_bins)
        ]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        # dictionary id -> GPT-2 id, only for entries that are GPT-2 ids (not specials, placeholders, codes, bins)
        self.to_gpt2 = {i: int(s) for i, s in enumerate(self.symbols) if s.isdigit()}

    @classmethod
    def from_dir(
        cls,
        bpe_dir: str | Path,
        code_dict_size: int = 8192,
        num_bins: int = 1000,
        vocab_size: int | None = None,
    ) -> OFATokenizer:
        """Load OFA's `utils/BPE/` files (encoder.json, vocab.bpe, dict.txt) from a local directory.

        With `vocab_size` (the model's embedding rows) the dictionary is fitted to the model: a model built on
        the first n lines of dict.txt (as the tiny test checkpoint is) uses exactly those; a model needing more
        entries than dict.txt has is an error.
        """
        d = Path(bpe_dir)
        absent = [f for f in BPE_FILES if not (d / f).is_file()]
        if absent:
            raise FileNotFoundError(f"BPE directory {d} lacks {', '.join(absent)} (OFA's utils/BPE files)")
        bpe = GPT2BPE.from_files(d / "encoder.json", d / "vocab.bpe")
        symbols = []
        for n, line in enumerate((d / "dict.txt").read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.rsplit(" ", 1)
            if len(fields) != 2 or not fields[1].strip().isdigit():
                raise ValueError(f"{d / 'dict.txt'}:{n}: expected '<symbol> <count>', got {line!r}")
            symbols.append(fields[0])
        if vocab_size is not None:
            n_text = vocab_size - len(SPECIALS) - 1 - code_dict_size - num_bins
            if not 0 < n_text <= len(symbols):
                raise ValueError(
                    f"the model's vocabulary ({vocab_size}) does not fit {d / 'dict.txt'} ({len(symbols)} entries) "
                    f"+ {len(SPECIALS)} specials + <mask> + {code_dict_size} codes + {num_bins} bins"
                )
            symbols = symbols[:n_text]
        return cls(bpe, symbols, code_dict_size, num_bins)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(str(i), UNK) for i in self.bpe.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.bpe.decode(self.to_gpt2[i] for i in ids if i in self.to_gpt2)


# A tiny word-level vocabulary for the untrained demo model: enough words for the prompt and plausible-looking
# (but meaningless) captions. Entries carry GPT-2's leading-space convention so decoding is a plain join.
TINY_WORDS = (
    " what does the image describe ? a an of in on with and is are at by to"
    " man woman person people child dog cat bird horse car bus train boat plane bike street road field"
    " grass water beach sky tree building room table kitchen food plate pizza cake ball frisbee"
    " red blue green yellow white black brown orange small large big two three group"
    " sitting standing walking riding playing holding eating flying running looking next top front"
    " near under over down up background view close picture video frame shape square circle moving"
).split(" ")[1:]


class TinyTokenizer:
    """Self-contained word-level vocabulary with the OFA dictionary layout (specials, words, mask, codes, bins)."""

    def __init__(self, code_dict_size: int = 8, num_bins: int = 8) -> None:
        words = [" " + w if w != "?" else w for w in TINY_WORDS]
        self.symbols = [*SPECIALS, *words, "<mask>"]
        self.symbols += [f"<code_{i}>" for i in range(code_dict_size)] + [
            f"<bin_{i}>" for i in range(num_bins)
        ]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.words = range(len(SPECIALS), len(SPECIALS) + len(words))

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _GPT2_SPLIT.findall(text):
            key = piece if piece in self.index else " " + piece.strip()
            ids.append(self.index.get(key, UNK))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i in self.words)


__all__ = [
    "CAPTION_PROMPT",
    "GPT2BPE",
    "OFATokenizer",
    "PAD",
    "TinyTokenizer",
    "Tokenizer",
    "caption_text",
    "source_ids",
]
