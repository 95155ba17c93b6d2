"""On-disk feature cache for the NMI analysis, keyed by (source file hash, encoder id, text).

Layout under the cache root::

    ROOT/file_hashes.json                       path -> {size, mtime_ns, sha256}: skip re-hashing big files
    ROOT/<encoder id>/<file sha256>.npy         float32 [N, D] features, row i belongs to texts[i]
    ROOT/<encoder id>/<file sha256>.texts.json  the N texts, in row order

Only texts that some draw actually samples are encoded (at most samples x repeats per source), so a
12M-line CC12M file costs one hash, not 12M encodings. Writes are atomic (temp file + rename; the
text index is renamed last), and a pair whose row counts disagree is discarded and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_output, write_bytes_atomic

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipvip" / "nmi"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path, cache_root: Path | None = None) -> str:
    """sha256 of a file, memoised in `cache_root/file_hashes.json` by (resolved path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    memo_path = cache_root / "file_hashes.json" if cache_root else None
    memo: dict[str, dict] = {}
    if memo_path and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (json.JSONDecodeError, OSError):
            memo = {}
    hit = memo.get(str(path))
    if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
        return str(hit["sha256"])
    digest = sha256_file(path)
    if memo_path:
        memo[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(memo_path, json.dumps(memo, indent=1).encode())
    return digest


def _slug(encoder_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id)[:120]


class FeatureCache:
    """Features of one source file under one encoder; `None` root means no cache (encode every time)."""

    def __init__(self, root: Path | None, file_hash: str, encoder_id: str) -> None:
        self.root = root
        self.encoder_id = encoder_id
        self.texts: list[str] = []
        self.rows: dict[str, int] = {}
        self.feats = np.zeros((0, 0), np.float32)
        self.encoded_now = 0  # texts encoded by this instance (0 on a warm second run)
        if root is None:
            self.npy = self.index = None
            return
        folder = root / _slug(encoder_id)
        self.npy = folder / f"{file_hash}.npy"
        self.index = folder / f"{file_hash}.texts.json"
        self._load()

    def _load(self) -> None:
        assert self.npy is not None and self.index is not None
        if not (self.npy.is_file() and self.index.is_file()):
            return
        try:
            texts = json.loads(self.index.read_text(encoding="utf-8"))
            feats = np.load(self.npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("feature cache %s unreadable (%s); rebuilding", self.npy, e)
            return
        if not isinstance(texts, list) or feats.ndim != 2 or len(texts) != feats.shape[0]:
            log.warning("feature cache %s inconsistent; rebuilding", self.npy)
            return
        self.texts, self.feats = texts, feats.astype(np.float32, copy=False)
        self.rows = {t: i for i, t in enumerate(texts)}

    def features(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Features [len(texts), D] in the order given; texts not cached are encoded (once each)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if missing:
            new = np.asarray(encode(missing), dtype=np.float32)
            if new.ndim != 2 or new.shape[0] != len(missing):
                raise ValueError(f"encoder returned shape {new.shape} for {len(missing)} texts")
            if self.feats.shape[0] and self.feats.shape[1] != new.shape[1]:
                raise ValueError(
                    f"cached features are {self.feats.shape[1]}-d but encoder {self.encoder_id} gives "
                    f"{new.shape[1]}-d: stale cache at {self.npy}"
                )
            self.feats = new if not self.feats.shape[0] else np.concatenate([self.feats, new])
            for t in missing:
                self.rows[t] = len(self.texts)
                self.texts.append(t)
            self.encoded_now += len(missing)
            self._save()
        return self.feats[[self.rows[t] for t in texts]]

    def _save(self) -> None:
        if self.npy is None or self.index is None:
            return
        self.npy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.feats, allow_pickle=False)  # a file object: np.save would add ".npy" to a name
        write_bytes_atomic(self.index, json.dumps(self.texts, ensure_ascii=False).encode("utf-8"))
