"""Pretraining data: the pipeline's WebDataset shards (CONTRACTS §3) -> batches of video/text/frame/caption.

Samples are read through the shard format's owner, ``pipeline.shard_format`` (member names, the key
rule, the tar index): the middle frame, the sampled frames, the subtitle, the caption (absent when not
captioned) and the optional 3 fps clip.

Sampling (why not a ``wds.DataPipeline`` with a shuffle buffer): resume must continue the SAME run, so the
data order is a pure function of (seed, rank, stream, position). Each process runs ``S = max(1, workers)``
independent *streams*; stream ``id = rank * S + s`` draws shards with replacement (resampled shards, so no
split-by-node/worker bookkeeping and no ``split_by_worker`` duplication, a known webdataset pitfall) from its own
seeded RNG, keeps ``shards_in_flight`` shards open, and draws each sample from a random open shard, at a
random position of that shard's permutation (random access into the uncompressed tar by member offset).
This mixes clips of different videos in a batch without a shuffle buffer, whose state could not be
restored. A stream's state is one integer, the number of draws so far; resuming replays the integer draws
without reading any data. DataLoader workers serve batches round-robin, so worker ``w`` plays stream
``(w + step) mod S`` after a resume at ``step``: batch ``k`` always comes from stream ``k mod S``.

Frames, decoding and the decode cache: ``trainer.data.samples``.

Missing captions (no ``K.cap.txt`` or an empty one) never become the text "None": with
``missing_caption: mask`` the sample is kept and ``Batch.cap_valid`` is False for it, so the caption terms of
the loss skip it (trainer.loop.losses); with ``drop`` the sample is skipped. Corrupt samples (undecodable JPEG or
MP4, missing parts, bad UTF-8) are logged, counted and skipped; batches are always full.

"""

from __future__ import annotations

import glob
import logging
import random
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from pipeline.shard_format import TarIndex, complete_shard_tars, index_tar
from trainer.config import needs_caption, needs_frame
from trainer.data.batch import Batch
from trainer.data.samples import (
    CorruptSample,
    DecodeCache,
    DecodeOptions,
    decode_sample,
    decode_whole,
    draw_sample,
    needed_members,
)

log = logging.getLogger(__name__)

COUNTERS = (
    "corrupt",
    "missing_caption_masked",
    "missing_caption_dropped",
    "excluded",
    "decode_cache_hits",  # draws served by the decode cache (data.decode_cache_mb), no read, no decode
    "decode_cache_misses",
)


# ------------------------------------------------------------------------------------------ shard discovery


def find_shard_tars(specs: list[str]) -> list[Path]:
    """Shard tars from pipeline OUT dirs (complete shards only), tar paths and globs; sorted, deduplicated."""
    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            out += complete_shard_tars(p)
        elif any(ch in spec for ch in "*?["):
            out += [Path(x) for x in sorted(glob.glob(spec))]
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"shard source not found: {spec}")
    seen: set[Path] = set()
    tars = [t for t in out if not (t.resolve() in seen or seen.add(t.resolve()))]  # type: ignore[func-returns-value]
    if not tars:
        raise FileNotFoundError(f"no complete shard tar found in {specs}")
    return tars


# ------------------------------------------------------------------------------------------------ tar index


class _IndexCache:
    """Tar indexes, the most recent ``keep`` in memory (a long run touches every shard); counts forever."""

    def __init__(self, tars: list[Path], keep: int = 64) -> None:
        self.tars, self.keep = tars, keep
        self._cache: OrderedDict[int, TarIndex] = OrderedDict()
        self._counts: dict[int, int] = {}

    def get(self, i: int) -> TarIndex:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        try:
            tix = index_tar(self.tars[i])
        except (tarfile.TarError, OSError) as e:  # a damaged shard must not stop the run: it holds nothing
            log.error("cannot index shard %s (%s): skipping it", self.tars[i], e)
            tix = TarIndex(self.tars[i], [], [])
        self._counts[i] = len(tix)
        self._cache[i] = tix
        if len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return tix

    def count(self, i: int) -> int:
        if i not in self._counts:
            self.get(i)
        return self._counts[i]


def count_samples(tars: list[Path]) -> int:
    return sum(len(index_tar(t)) for t in tars)


# -------------------------------------------------------------------------------------------- sample stream


class SampleStream:
    """Deterministic infinite sequence of (shard, sample) draws; state = number of draws (``pos``)."""

    def __init__(self, index: _IndexCache, seed: int, stream_id: int, in_flight: int) -> None:
        self.index = index
        self.rng = np.random.Generator(np.random.PCG64([seed, stream_id]))
        self.in_flight = max(1, in_flight)
        self.open: list[list[Any]] = []  # [shard, permutation, cursor]
        self.pos = 0

    def _fill(self) -> None:
        empty = 0
        while len(self.open) < self.in_flight:
            shard = int(self.rng.integers(len(self.index.tars)))
            n = self.index.count(shard)
            if n == 0:
                empty += 1
                if empty > 1000:
                    raise RuntimeError("shards hold no samples")
                continue
            self.open.append([shard, self.rng.permutation(n), 0])

    def next(self) -> tuple[int, int]:
        self._fill()
        j = int(self.rng.integers(len(self.open)))
        cur = self.open[j]
        sample = int(cur[1][cur[2]])
        cur[2] += 1
        if cur[2] == len(cur[1]):
            self.open.pop(j)
        self.pos += 1
        return cur[0], sample

    def skip_to(self, pos: int) -> None:
        if pos < self.pos:
            raise ValueError(f"cannot rewind a stream from {self.pos} to {pos}")
        while self.pos < pos:
            self.next()


# -------------------------------------------------------------------------------------------- the dataset


@dataclass
class StreamSpec:
    seed: int
    rank: int
    streams_per_rank: int
    first_stream: int  # worker w plays stream (w + first_stream) % streams_per_rank
    positions: list[int]  # start position of each logical stream


class ShardStreamDataset(torch.utils.data.IterableDataset):
    """Yields full ``Batch``es forever; one logical stream per DataLoader worker."""

    def __init__(
        self,
        tars: list[Path],
        tokenizer: Any,
        batch_size: int,
        max_text_len: int,
        vid_txt: str,
        missing_caption: str,
        opt: DecodeOptions,
        spec: StreamSpec,
        in_flight: int,
        exclude: frozenset[str] = frozenset(),
        decode_cache_bytes: int = 0,
    ) -> None:
        super().__init__()
        self.tars, self.tokenizer, self.batch_size = tars, tokenizer, batch_size
        self.max_text_len, self.vid_txt, self.missing_caption = max_text_len, vid_txt, missing_caption
        self.opt, self.spec, self.in_flight, self.exclude = opt, spec, in_flight, exclude
        self.decode_cache_bytes = decode_cache_bytes

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        s = (worker + self.spec.first_stream) % self.spec.streams_per_rank
        yield from self.stream_batches(s)

    def stream_batches(self, s: int) -> Iterator[Batch]:
        spec = self.spec
        stream_id = spec.rank * spec.streams_per_rank + s
        index = _IndexCache(self.tars)
        stream = SampleStream(index, spec.seed, stream_id, self.in_flight)
        stream.skip_to(spec.positions[s])
        handles: dict[int, BinaryIO] = {}
        cache = DecodeCache(self.decode_cache_bytes) if self.decode_cache_bytes > 0 else None
        counts = dict.fromkeys(COUNTERS, 0)
        try:
            while True:
                items: list[tuple[str, dict[str, Any]]] = []
                while len(items) < self.batch_size:
                    shard, i = stream.next()
                    if len(handles) > 2 * self.in_flight:  # close shards no longer being drawn from
                        live = {o[0] for o in stream.open} | {shard}
                        for old in [h for h in handles if h not in live]:
                            handles.pop(old).close()
                    tix = index.get(shard)
                    key = tix.keys[i]
                    if key in self.exclude:
                        counts["excluded"] += 1
                        continue
                    # Per-sample RNG from the draw position: jitter is reproducible after a resume.
                    rng = random.Random(f"{spec.seed}-{stream_id}-{stream.pos}")
                    try:
                        opener = partial(_handle, handles, shard, tix.path)
                        sample = self._draw(tix, i, opener, cache, counts, rng)
                    except (CorruptSample, OSError) as e:
                        counts["corrupt"] += 1
                        if counts["corrupt"] <= 20 or counts["corrupt"] % 1000 == 0:
                            log.warning("skipping corrupt sample %s in %s: %s", key, tix.path.name, e)
                        continue
                    if self.opt.need_caption and sample["caption"] is None:
                        if self.missing_caption == "drop" or self.vid_txt == "caption":
                            counts["missing_caption_dropped"] += 1
                            continue
                        counts["missing_caption_masked"] += 1
                    items.append((key, sample))
                yield self._collate(items, s, stream.pos, counts)
                counts = dict.fromkeys(COUNTERS, 0)
        finally:
            for fh in handles.values():
                fh.close()

    def _draw(
        self,
        tix: TarIndex,
        i: int,
        handle: Callable[[], BinaryIO],
        cache: DecodeCache | None,
        counts: dict[str, int],
        rng: random.Random,
    ) -> dict[str, Any]:
        """Sample ``i`` of ``tix`` for one draw: from the decode cache when it holds it (a corrupt sample's
        reason too), else read (only the members needed) and decoded."""
        if cache is None:
            return decode_sample(
                tix.read(handle(), i, needed_members(tix.members[i], self.opt)), self.opt, rng
            )
        ckey = (str(tix.path), tix.keys[i], astuple(self.opt))
        entry = cache.get(ckey)
        counts["decode_cache_misses" if entry is None else "decode_cache_hits"] += 1
        if entry is None:
            try:
                entry = decode_whole(
                    tix.read(handle(), i, needed_members(tix.members[i], self.opt)), self.opt
                )
            except CorruptSample as e:  # the same bytes fail the same way: remember why, read them no more
                entry = str(e)
            cache.put(ckey, entry)
        if isinstance(entry, str):
            raise CorruptSample(entry)
        return draw_sample(entry, self.opt, rng)

    def _collate(self, items: list[tuple[str, dict[str, Any]]], s: int, pos: int, counts: dict) -> Batch:
        samples = [x for _, x in items]
        captions = [x["caption"] for x in samples]
        texts = captions if self.vid_txt == "caption" else [x["subtitle"] for x in samples]
        text_ids, text_mask = self.tokenizer(texts, self.max_text_len)
        cap_ids = cap_mask = cap_valid = None
        if self.opt.need_caption:
            # A missing caption is tokenised as "" only to keep the tensor shape; cap_valid masks it out.
            cap_ids, cap_mask = self.tokenizer([c or "" for c in captions], self.max_text_len)
            cap_valid = torch.tensor([c is not None for c in captions], dtype=torch.bool)
        return Batch(
            video=torch.stack([x["video"] for x in samples]),
            text_ids=text_ids,
            text_mask=text_mask,
            image=torch.stack([x["image"] for x in samples]) if self.opt.need_image else None,
            cap_ids=cap_ids,
            cap_mask=cap_mask,
            keys=[k for k, _ in items],
            cap_valid=cap_valid,
            stream=s,
            stream_pos=pos,
            counts=dict(counts),
        )


class ShardLoader:
    """Infinite iterator of Batches for one rank, with a resumable position (``state_dict``)."""

    def __init__(self, dataset: ShardStreamDataset, num_workers: int, pin_memory: bool) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.positions = list(dataset.spec.positions)
        self.next_stream = dataset.spec.first_stream
        self.totals = dict.fromkeys(COUNTERS, 0)

    def __iter__(self) -> Iterator[Batch]:
        spec = self.dataset.spec
        self.dataset.spec = StreamSpec(
            spec.seed, spec.rank, spec.streams_per_rank, self.next_stream, list(self.positions)
        )
        if self.num_workers == 0:
            it: Iterator[Batch] = _round_robin_inline(self.dataset)
        else:
            it = iter(
                torch.utils.data.DataLoader(
                    self.dataset,
                    batch_size=None,
                    num_workers=self.num_workers,
                    pin_memory=self.pin_memory,
                    persistent_workers=False,
                    prefetch_factor=2,
                )
            )
        for batch in it:
            self.positions[batch.stream] = batch.stream_pos
            self.next_stream = (batch.stream + 1) % spec.streams_per_rank
            for k, v in batch.counts.items():
                self.totals[k] += v
            yield batch

    def state_dict(self) -> dict[str, Any]:
        spec = self.dataset.spec
        return {
            "kind": "shards",
            "seed": spec.seed,
            "rank": spec.rank,
            "streams_per_rank": spec.streams_per_rank,
            "positions": list(self.positions),
            "next_stream": self.next_stream,
            "totals": dict(self.totals),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        spec = self.dataset.spec
        same = (
            state.get("kind") == "shards"
            and state.get("seed") == spec.seed
            and state.get("rank") == spec.rank
            and state.get("streams_per_rank") == spec.streams_per_rank
        )
        if not same:
            raise ValueError(
                "data position was saved with another seed/rank/worker layout; "
                "resume with the same data.num_workers and world size (or resume: none)"
            )
        self.positions = [int(p) for p in state["positions"]]
        self.next_stream = int(state["next_stream"])
        self.totals.update({k: int(v) for k, v in state.get("totals", {}).items()})


def _handle(handles: dict[int, BinaryIO], shard: int, path: Path) -> BinaryIO:
    """The open file of ``shard`` (kept open across draws; the stream closes those it no longer draws from)."""
    if shard not in handles:
        handles[shard] = open(path, "rb")  # noqa: SIM115
    return handles[shard]


def _round_robin_inline(ds: ShardStreamDataset) -> Iterator[Batch]:
    """num_workers == 0: play the streams in the main process, in the DataLoader's round-robin order."""
    spec = ds.spec
    gens = {s: ds.stream_batches(s) for s in range(spec.streams_per_rank)}
    s = spec.first_stream
    while True:
        yield next(gens[s])
        s = (s + 1) % spec.streams_per_rank


def read_exclude(path: str) -> frozenset[str]:
    if not path:
        return frozenset()
    return frozenset(
        line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()
    )


def build_shard_loader(
    cfg: Any,
    tokenizer: Any,
    rank: int,
    world_size: int,
    *,
    image_size: int = 224,
    pin_memory: bool = False,
    tars: list[Path] | None = None,
) -> ShardLoader:
    """Loader for ``cfg.data.kind == "shards"`` (a TrainConfig). ``image_size``: the model's input size;
    ``tars``: the shard list when the caller has already resolved ``data.shards``."""
    d = cfg.data
    tars = tars if tars is not None else find_shard_tars(d.shards)
    streams = max(1, d.num_workers)
    opt = DecodeOptions(
        num_frames=d.num_frames,
        image_size=image_size,
        frame_source=d.frame_source,
        jitter=d.jitter,
        need_image=needs_frame(cfg.loss),
        need_caption=needs_caption(cfg.loss) or d.vid_txt == "caption",
    )
    spec = StreamSpec(cfg.seed, rank, streams, 0, [0] * streams)
    ds = ShardStreamDataset(
        tars,
        tokenizer,
        d.batch_size,
        d.max_text_len,
        d.vid_txt,
        d.missing_caption,
        opt,
        spec,
        d.shards_in_flight,
        read_exclude(d.exclude_keys),
        d.decode_cache_mb * 2**20,
    )
    log.info("rank %d/%d: %d shard tars, %d streams", rank, world_size, len(tars), streams)
    return ShardLoader(ds, d.num_workers, pin_memory)
