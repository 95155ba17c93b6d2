"""The shard format (CONTRACTS §3), in one place: file names, Parquet columns, WebDataset member names
and the key rule, a tar writer and a random-access tar reader.

`pipeline.shards` writes shards through this module; the trainer and the analysis read them through it.
No other module spells a member name or a shard file name: adding a field means adding it here (and to
CONTRACTS §3), then writing it in `pipeline.shards` and reading it where it is needed.

Sample `K` (K = `pipeline.metadata.clip_key`: no dots) is the run of consecutive tar members named
`K.<ext>`; the key is the member name up to its first dot and the extension the rest, lower-cased
(webdataset's own rule, `webdataset.tariterators.base_plus_ext`, so webdataset readers agree).
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from webdataset.tariterators import base_plus_ext

# ------------------------------------------------------------------------------------------- files

SHARDS_DIR = "shards"
TAR_SUFFIX = ".tar"
PARQUET_SUFFIX = ".parquet"
STATS_SUFFIX = ".stats.json"  # written last: its presence marks the shard complete


def shard_name(index: int) -> str:
    return f"{index:05d}"


def shard_paths(out: Path, index: int) -> dict[str, Path]:
    d = Path(out) / SHARDS_DIR
    n = shard_name(index)
    return {
        "parquet": d / f"{n}{PARQUET_SUFFIX}",
        "tar": d / f"{n}{TAR_SUFFIX}",
        "stats": d / f"{n}{STATS_SUFFIX}",
    }


def shard_index(tar: Path) -> int:
    """The shard number of `OUT/shards/NNNNN.tar`."""
    return int(Path(tar).name[: -len(TAR_SUFFIX)])


def shard_is_complete(out: Path, index: int) -> bool:
    return shard_paths(out, index)["stats"].is_file()


def complete_shard_tars(out: Path) -> list[Path]:
    """Tars of the complete shards of a pipeline OUT dir, in shard order."""
    d = Path(out) / SHARDS_DIR
    if not d.is_dir():
        return []
    tars = []
    for stats in sorted(d.glob(f"*{STATS_SUFFIX}")):
        tar = stats.with_name(stats.name[: -len(STATS_SUFFIX)] + TAR_SUFFIX)
        if tar.is_file():
            tars.append(tar)
    return tars


# ----------------------------------------------------------------------------------------- columns

SHARD_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("clip_id", pa.string()),
        ("video_id", pa.string()),
        ("shard", pa.int32()),
        ("span_start", pa.float64()),
        ("span_end", pa.float64()),
        ("middle_time", pa.float64()),
        ("subtitle", pa.string()),
        ("caption", pa.string()),
        ("captioner", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("decode_ms", pa.float32()),
        ("caption_ms", pa.float32()),
    ]
)
CAPTIONS_SCHEMA = pa.schema(
    [("key", pa.string()), ("clip_id", pa.string()), ("caption", pa.string()), ("captioner", pa.string())]
)


def read_shard(out: Path, index: int) -> pa.Table:
    """The Parquet rows of shard `index` (one per input clip, failures included)."""
    return pq.read_table(shard_paths(out, index)["parquet"], schema=SHARD_SCHEMA)


# ---------------------------------------------------------------------------------- member names

MIDDLE = "mid.jpg"  # the middle frame
SUBTITLE = "sub.txt"  # may be empty
CAPTION = "cap.txt"  # absent when not captioned
META = "json"
VIDEO = "mp4"  # with --store-video only
_FRAME = re.compile(r"^f(\d{2})\.jpg$")


def frame_ext(j: int) -> str:
    """Extension of the j-th sampled frame: f00.jpg, f01.jpg, ..."""
    return f"f{j:02d}.jpg"


def frame_exts(exts: Iterable[str]) -> list[str]:
    """The sampled-frame extensions among `exts`, in frame order."""
    return sorted(e for e in exts if _FRAME.match(e))


def member_name(key: str, ext: str) -> str:
    return f"{key}.{ext}"


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, None for a name outside the format (no extension)."""
    key, ext = base_plus_ext(name)
    return None if key is None or ext is None else (key, ext.lower())


def sample_members(
    key: str,
    *,
    middle: bytes,
    frames: list[bytes],
    subtitle: str | None,
    caption: str | None,
    meta: bytes,
    video: bytes | None,
) -> list[tuple[str, bytes]]:
    """The members of one sample, in the order they are written (JPEG bytes already encoded)."""
    members = [(member_name(key, MIDDLE), middle)]
    members += [(member_name(key, frame_ext(j)), f) for j, f in enumerate(frames)]
    members.append((member_name(key, SUBTITLE), (subtitle or "").encode("utf-8")))
    if caption is not None:
        members.append((member_name(key, CAPTION), caption.encode("utf-8")))
    members.append((member_name(key, META), meta))
    if video is not None:
        members.append((member_name(key, VIDEO), video))
    return members


# ------------------------------------------------------------------------------------------ writer


def open_tar_writer(path: Path) -> tarfile.TarFile:
    """An uncompressed PAX tar (readers seek to member offsets, so never compressed)."""
    return tarfile.open(path, "w", format=tarfile.PAX_FORMAT)


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # byte-identical shards for identical inputs
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------------------ reader


@dataclass
class TarIndex:
    """Where each sample's members lie in an uncompressed shard tar, for random access."""

    path: Path
    keys: list[str]
    members: list[dict[str, tuple[int, int]]]  # per sample: extension -> (data offset, size)

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, fh: BinaryIO, i: int, exts: Iterable[str] | None = None) -> dict[str, bytes]:
        """Sample i's members (only `exts` when given) from an open handle of `path`."""
        out = {}
        for ext, (offset, size) in self.members[i].items():
            if exts is None or ext in exts:
                fh.seek(offset)
                out[ext] = fh.read(size)
        return out


def index_tar(path: Path) -> TarIndex:
    """Group members into samples by the key rule (consecutive members sharing a key)."""
    keys: list[str] = []
    members: list[dict[str, tuple[int, int]]] = []
    with tarfile.open(path, mode="r:") as tf:  # uncompressed only: random access needs member offsets
        for m in tf:
            split = split_member(m.name) if m.isfile() else None
            if split is None:
                continue
            key, ext = split
            if not keys or keys[-1] != key or ext in members[-1]:
                keys.append(key)
                members.append({})
            members[-1][ext] = (m.offset_data, m.size)
    return TarIndex(path, keys, members)


def iter_samples(path: Path, exts: Iterable[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, extension -> bytes) of every sample of a shard tar, in tar order."""
    tix = index_tar(path)
    wanted = set(exts) if exts is not None else None
    with open(path, "rb") as fh:
        for i, key in enumerate(tix.keys):
            yield key, tix.read(fh, i, wanted)
