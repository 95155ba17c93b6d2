"""Downstream text-video retrieval data: annotation loaders, video lookup, frame decoding, train loader.

Every loader reads a benchmark's public annotation format (HDVILA.md §2) and returns one canonical
``RetrievalSet``: a list of videos, each with its texts. How the texts become queries is the ``mode``:

- ``"sentence"``: one query per text (MSR-VTT 1k-A has exactly one; DiDeMo/ActivityNet in sentence mode
  have several per video and are scored with the multi-caption protocol).
- ``"paragraph"``: one query per video, the video's sentences joined with a space in annotation order
  (CLIP4Clip / CLIP-ViP DiDeMo; ActivityNet paragraph-to-video on val_1).

Videos are found by *stem* under a root directory (recursively), never by a fixed extension, because DiDeMo
names mix ten extensions and some have none. A missing or undecodable video is reported and excluded with a
count; it never crashes a run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.config import Mode, RetrievalDataConfig, default_mode, load_config, retrieval_config
from trainer.data.batch import Batch
from trainer.data.frames import VideoDecodeError, decode_frames, load_clip

log = logging.getLogger(__name__)

DATASETS = ("msrvtt", "didemo", "lsmdc", "activitynet", "msvd")


# --------------------------------------------------------------------------------------------- records


@dataclass
class VideoEntry:
    """One gallery video: ``key`` is the file stem looked up under the videos root."""

    key: str
    texts: list[str]
    span: tuple[float, float] | None = None  # seconds within the file; None = the whole file


@dataclass
class RetrievalSet:
    dataset: str
    split: str
    videos: list[VideoEntry]
    mode: Mode = "sentence"
    skipped: list[str] = field(default_factory=list)  # annotation rows dropped, with the reason

    def queries(self) -> tuple[list[str], list[int]]:
        """Query texts and, for each, the index of its video in ``self.videos``."""
        texts: list[str] = []
        owner: list[int] = []
        for i, v in enumerate(self.videos):
            if self.mode == "paragraph":
                texts.append(join_paragraph(v.texts))
                owner.append(i)
            else:
                texts.extend(v.texts)
                owner.extend([i] * len(v.texts))
        return texts, owner


def join_paragraph(sentences: Sequence[str]) -> str:
    """Sentences of one video joined with a single space, in annotation order (CLIP4Clip's join)."""
    return " ".join(s.strip() for s in sentences if s.strip())


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _group(pairs: Sequence[tuple[str, str]]) -> list[VideoEntry]:
    """Group (video key, text) pairs by video, keeping first-appearance order of videos and texts."""
    by_key: dict[str, VideoEntry] = {}
    for key, text in pairs:
        entry = by_key.setdefault(key, VideoEntry(key=key, texts=[]))
        entry.texts.append(text)
    return list(by_key.values())


# ------------------------------------------------------------------------------------ table reading


def read_table(path: Path, *, header: bool | None = None) -> tuple[list[str] | None, list[list[str]]]:
    """Rows of a delimited text file; sniffs ``,`` / ``;`` / tab, accepts a UTF-8 BOM and CRLF/CR newlines.

    ``header=None`` treats the first row as a header when it contains no digit-bearing cell that looks like
    data (MSR-VTT headers are ``key,vid_key,video_id,sentence`` or ``video_id``; LSMDC has none).
    """
    raw = Path(path).read_bytes().decode("utf-8-sig")
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return None, []
    first = lines[0]
    delim = max(("\t", ";", ","), key=lambda d: (first.count(d), d == ","))
    if first.count(delim) == 0:
        delim = ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
    rows = [[c.strip() for c in r] for r in rows]
    if header is None:
        header = not any(re.search(r"\d", c) for c in rows[0])
    if header:
        return [c.lower() for c in rows[0]], rows[1:]
    return None, rows


def _column(head: list[str] | None, name: str, default: int) -> int:
    if head is not None and name in head:
        return head.index(name)
    return default


# --------------------------------------------------------------------------------------------- MSR-VTT


def load_msrvtt_test(csv_path: Path, split: str = "test") -> RetrievalSet:
    """MSR-VTT 1k-A (``MSRVTT_JSFUSION_test.csv``: ``key,vid_key,video_id,sentence``), or our validation csv
    in the same format. One sentence per row; rows of the same video are grouped."""
    head, rows = read_table(Path(csv_path))
    vcol, scol = _column(head, "video_id", 2), _column(head, "sentence", 3)
    pairs, skipped = [], []
    for n, r in enumerate(rows, start=2 if head else 1):
        if len(r) <= max(vcol, scol) or not r[vcol] or not r[scol]:
            skipped.append(f"{csv_path}:{n}: expected video_id and sentence columns, got {r!r}")
            continue
        pairs.append((Path(r[vcol]).stem, _clean(r[scol])))
    return RetrievalSet("msrvtt", split, _group(pairs), "sentence", skipped)


def load_msrvtt_train(ids_csv: Path, data_json: Path) -> RetrievalSet:
    """MSR-VTT training videos (``MSRVTT_train.9k.csv``, column ``video_id``) with all their captions from
    ``MSRVTT_data.json`` (``sentences[]``: ``video_id``, ``caption``); training samples one per step."""
    head, rows = read_table(Path(ids_csv))
    vcol = _column(head, "video_id", 0)
    ids = [Path(r[vcol]).stem for r in rows if len(r) > vcol and r[vcol]]
    data = json.loads(Path(data_json).read_text(encoding="utf-8-sig"))
    captions: dict[str, list[str]] = {}
    for s in data.get("sentences", []):
        captions.setdefault(str(s["video_id"]), []).append(_clean(s["caption"]))
    videos, skipped = [], []
    for vid in dict.fromkeys(ids):
        if captions.get(vid):
            videos.append(VideoEntry(vid, captions[vid]))
        else:
            skipped.append(f"{vid}: no caption in {data_json}")
    return RetrievalSet("msrvtt", "train", videos, "sentence", skipped)


def load_msrvtt_captions(
    data_json: Path, ids: Sequence[str] | None = None, split: str = "test"
) -> RetrievalSet:
    """All captions of ``ids`` (or of the json's videos whose ``split`` field matches) from
    ``MSRVTT_data.json``: the multi-caption ("MSR-VTT full") protocol."""
    data = json.loads(Path(data_json).read_text(encoding="utf-8-sig"))
    if ids is None:
        ids = [str(v["video_id"]) for v in data.get("videos", []) if v.get("split") == split]
    wanted = dict.fromkeys(ids)
    pairs = [(str(s["video_id"]), _clean(s["caption"])) for s in data.get("sentences", [])]
    grouped = {v.key: v for v in _group([p for p in pairs if p[0] in wanted])}
    videos = [grouped[k] for k in wanted if k in grouped]
    skipped = [f"{k}: no caption" for k in wanted if k not in grouped]
    return RetrievalSet("msrvtt", split, videos, "sentence", skipped)


# --------------------------------------------------------------------------------------------- DiDeMo


def load_didemo(json_path: Path, split: str = "test", mode: Mode = "paragraph") -> RetrievalSet:
    """LocalizingMoments ``{train,val,test}_data.json``. Paragraph mode (the benchmark) joins a video's
    descriptions; the span is the whole video ([0, 31] s in CLIP4Clip, i.e. every 5-s segment)."""
    items = json.loads(Path(json_path).read_text(encoding="utf-8-sig"))
    pairs, skipped = [], []
    for n, it in enumerate(items):
        video, desc = it.get("video"), it.get("description")
        if not video or not isinstance(desc, str) or not desc.strip():
            skipped.append(f"{json_path}[{n}]: missing video or description")
            continue
        # Names look like '<owner>_<id>_<secret>.mov'; 53 val names have no extension -> resolve by stem.
        pairs.append((_strip_video_ext(str(video)), _clean(desc)))
    return RetrievalSet("didemo", split, _group(pairs), mode, skipped)


_VIDEO_EXTS = {
    ".mp4", ".mov", ".avi", ".mpg", ".mpeg", ".m4v", ".3gp", ".wmv", ".3g2", ".mts", ".m2ts", ".mkv", ".webm",
    ".flv",
}  # fmt: skip


def _strip_video_ext(name: str) -> str:
    p = Path(name)
    return p.stem if p.suffix.lower() in _VIDEO_EXTS else p.name


# ---------------------------------------------------------------------------------------------- LSMDC


def load_lsmdc(path: Path, split: str = "test") -> RetrievalSet:
    """LSMDC (``LSMDC16_challenge_1000_publictect.csv`` for the 1k test, ``LSMDC16_annos_training.csv`` for
    training): tab-separated despite the name, no header, 6 columns, clip id first and sentence last."""
    _, rows = read_table(Path(path), header=False)
    pairs, skipped = [], []
    for n, r in enumerate(rows, start=1):
        if len(r) < 2 or not r[0] or not r[-1]:
            skipped.append(f"{path}:{n}: expected clip id ... sentence, got {r!r}")
            continue
        pairs.append((_strip_video_ext(r[0]), _clean(r[-1])))
    return RetrievalSet("lsmdc", split, _group(pairs), "sentence", skipped)


# ----------------------------------------------------------------------------------------- ActivityNet


def load_activitynet(
    json_path: Path, split: str = "val1", mode: Mode = "paragraph", ids_json: Path | None = None
) -> RetrievalSet:
    """ActivityNet Captions (``train.json`` / ``val_1.json``: ``{"v_<id>": {duration, timestamps,
    sentences}}``). Paragraph mode joins the stripped sentences over the whole video ([0, duration])."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8-sig"))
    keys = list(data)
    if ids_json is not None:
        keys = [k for k in json.loads(Path(ids_json).read_text(encoding="utf-8-sig")) if k in data]
    videos, skipped = [], []
    for k in keys:
        rec = data[k]
        sents = [_clean(s) for s in rec.get("sentences", []) if isinstance(s, str) and s.strip()]
        if not sents:
            skipped.append(f"{k}: no sentences")
            continue
        videos.append(VideoEntry(_strip_video_ext(k), sents))
    return RetrievalSet("activitynet", split, videos, mode, skipped)


# ----------------------------------------------------------------------------------------------- MSVD


def load_msvd(captions_json: Path, list_txt: Path, split: str = "test") -> RetrievalSet:
    """MSVD (``captions_msvd.json``: clip id -> captions; ``{split}_list.txt``): multi-caption protocol."""
    caps = json.loads(Path(captions_json).read_text(encoding="utf-8-sig"))
    ids = [ln.strip() for ln in Path(list_txt).read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    videos, skipped = [], []
    for k in ids:
        texts = [_clean(t) for t in caps.get(k, []) if str(t).strip()]
        if texts:
            videos.append(VideoEntry(k, texts))
        else:
            skipped.append(f"{k}: no caption")
    return RetrievalSet("msvd", split, videos, "sentence", skipped)


# ------------------------------------------------------------------------------------------ video files


def index_videos(root: Path) -> dict[str, Path]:
    """Map file stem -> path for every regular file under ``root`` (recursive). When two files share a stem
    the one with a video extension, then the lexicographically first path, wins (deterministic)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"videos root {root} is not a directory")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            for key in {p.stem, p.name}:
                old = found.get(key)
                if old is None or (p.suffix.lower() in _VIDEO_EXTS and old.suffix.lower() not in _VIDEO_EXTS):
                    found[key] = p
    return found


@dataclass
class Resolved:
    videos: list[VideoEntry]
    paths: list[Path]
    missing: list[str]


def resolve_videos(rset: RetrievalSet, root: Path, index: dict[str, Path] | None = None) -> Resolved:
    """Keep the videos whose file exists under ``root``; the others are listed in ``missing``."""
    index = index_videos(root) if index is None else index
    videos, paths, missing = [], [], []
    for v in rset.videos:
        p = index.get(v.key)
        if p is None:
            missing.append(v.key)
        else:
            videos.append(v)
            paths.append(p)
    if missing:
        log.warning("%s/%s: %d of %d videos not found under %s (excluded), e.g. %s", rset.dataset, rset.split,
                    len(missing), len(rset.videos), root, missing[:3])  # fmt: skip
    return Resolved(videos, paths, missing)


def load_split(cfg: RetrievalDataConfig, split: str) -> RetrievalSet:
    """Load ``split`` ("train", "val" or "test") of ``cfg.dataset`` from ``cfg.annotations``.

    Roles: msrvtt ``train_ids``, ``data_json`` (train), ``val_csv``, ``test_csv`` (JSFusion format), or
    ``test_ids`` + ``data_json`` for the multi-caption full test; didemo ``train_json``/``val_json``/
    ``test_json``; lsmdc ``train_csv``/``val_csv``/``test_csv``; activitynet ``train_json``/``val_json``/
    ``test_json`` (the benchmark's test is ``val_1.json``) with optional ``*_ids``; msvd ``captions_json`` +
    ``{split}_list``.
    """
    a = cfg.annotations
    ds = cfg.dataset.lower()
    mode = cfg.mode or default_mode(ds)
    if mode not in ("sentence", "paragraph"):
        raise ValueError(f"mode must be 'sentence' or 'paragraph', got {mode!r}")

    def need(role: str) -> Path:
        if not a.get(role):
            raise ValueError(f"{ds} {split}: annotations.{role} is not set (have {sorted(a)})")
        return Path(a[role])

    if ds == "msrvtt":
        if split == "train":
            return load_msrvtt_train(need("train_ids"), need("data_json"))
        if a.get(f"{split}_csv"):
            return load_msrvtt_test(need(f"{split}_csv"), split)
        _, rows = read_table(need(f"{split}_ids"))
        return load_msrvtt_captions(need("data_json"), [Path(r[0]).stem for r in rows if r], split)
    if ds == "didemo":
        return load_didemo(need(f"{split}_json"), split, mode)
    if ds == "lsmdc":
        return load_lsmdc(need(f"{split}_csv"), split)
    if ds == "activitynet":
        ids = Path(a[f"{split}_ids"]) if a.get(f"{split}_ids") else None
        return load_activitynet(need(f"{split}_json"), split, mode, ids)
    if ds == "msvd":
        return load_msvd(need("captions_json"), need(f"{split}_list"), split)
    raise ValueError(f"unknown dataset {cfg.dataset!r}; expected one of {DATASETS}")


# -------------------------------------------------------------------------------------------- training


class RetrievalTrainDataset(torch.utils.data.Dataset):
    """One item per video: jittered frames and one caption drawn at random (MSR-VTT: 1 of 20 per step);
    in paragraph mode the joined paragraph. A failing video yields ``None`` (dropped by the collate)."""

    def __init__(self, rset: RetrievalSet, paths: list[Path], cfg: RetrievalDataConfig, seed: int) -> None:
        self.rset, self.paths, self.cfg, self.seed = rset, paths, cfg, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rset.videos)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str] | None:
        rng = random.Random(f"{self.seed}-{self.epoch}-{i}")  # same draw on every worker/rank
        v = self.rset.videos[i]
        text = join_paragraph(v.texts) if self.rset.mode == "paragraph" else rng.choice(v.texts)
        try:
            video = load_clip(self.paths[i], self.cfg.num_frames, self.cfg.image_size, span=v.span, rng=rng)
        except VideoDecodeError as e:
            log.warning("train: dropping %s (%s)", self.paths[i], e)
            return None
        return video, text, v.key


class _Collate:
    def __init__(self, tokenizer: Any, max_len: int) -> None:
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, items: list) -> Any:

        items = [it for it in items if it is not None]
        if not items:
            return None
        ids, mask = self.tokenizer([t for _, t, _ in items], self.max_len)
        return Batch(
            video=torch.stack([v for v, _, _ in items]),
            text_ids=ids,
            text_mask=mask,
            image=None,
            cap_ids=None,
            cap_mask=None,
            keys=[k for _, _, k in items],
        )


class RetrievalTrainLoader:
    """Epoch-based loader over this rank's shard of the training videos; skips empty batches."""

    def __init__(self, dataset: RetrievalTrainDataset, loader: torch.utils.data.DataLoader, sampler) -> None:
        self.dataset, self.loader, self.sampler = dataset, loader, sampler

    def set_epoch(self, epoch: int) -> None:
        self.dataset.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for b in self.loader:
            if b is not None:
                yield b


def build_train_loader(cfg: Any, tokenizer: Any, rank: int, world_size: int) -> RetrievalTrainLoader:
    """Training loader for ``data.kind: retrieval``. Reads ``cfg.data.retrieval`` (a ``RetrievalDataConfig``
    or mapping); per-rank batch = ``cfg.data.batch_size`` (falling back to global batch / world size)."""
    data = cfg.data
    rcfg = retrieval_config(getattr(data, "retrieval", None) or data)
    rset = load_split(rcfg, "train")
    res = resolve_videos(rset, Path(rcfg.videos))
    if not res.videos:
        raise FileNotFoundError(f"no training video of {rcfg.dataset} found under {rcfg.videos}")
    log.info("train %s: %d videos (%d missing, %d annotation rows skipped)", rcfg.dataset, len(res.videos),
             len(res.missing), len(rset.skipped))  # fmt: skip
    ds = RetrievalTrainDataset(RetrievalSet(rset.dataset, "train", res.videos, rset.mode), res.paths, rcfg,
                               int(getattr(cfg, "seed", 0)))  # fmt: skip
    batch = _per_rank_batch(cfg, world_size)
    sampler: torch.utils.data.DistributedSampler = torch.utils.data.DistributedSampler(
        ds,
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=int(getattr(cfg, "seed", 0)),
        drop_last=False,
    )
    workers = int(getattr(data, "num_workers", 0) or 0)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_Collate(tokenizer, rcfg.max_text_len),
        drop_last=len(ds) >= batch * world_size,  # constant batch shape for gathered losses when possible
        persistent_workers=False,
    )
    return RetrievalTrainLoader(ds, loader, sampler)


def _per_rank_batch(cfg: Any, world_size: int) -> int:
    data = cfg.data
    for obj, name in ((data, "batch_size"), (cfg, "batch_size")):
        if getattr(obj, name, None):
            return int(getattr(obj, name))
    for obj, name in ((data, "global_batch_size"), (cfg, "global_batch_size")):
        if getattr(obj, name, None):
            return max(1, int(getattr(obj, name)) // world_size)
    raise ValueError("config has no batch size (data.batch_size or global_batch_size)")


# ----------------------------------------------------------------------------------- validation split


def msrvtt_holdout(
    train_ids: Path, data_json: Path, out_dir: Path, num_val: int, seed: int = 0
) -> tuple[Path, Path]:
    """Split MSR-VTT's 9k training videos into train + a held-out validation set for model selection.

    Writes ``out_dir/MSRVTT_train.holdout.csv`` (``video_id``) and ``out_dir/MSRVTT_val.csv`` in the JSFusion
    format (one caption per video, the first of ``MSRVTT_data.json``, like the 1k-A test). The choice is a
    seeded random sample, so the split is reproducible.
    """
    rset = load_msrvtt_train(train_ids, data_json)
    if not 0 < num_val < len(rset.videos):
        raise ValueError(f"num_val must be in 1..{len(rset.videos) - 1}, got {num_val}")
    val_idx = set(random.Random(seed).sample(range(len(rset.videos)), num_val))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "MSRVTT_train.holdout.csv", out_dir / "MSRVTT_val.csv"
    keep = [v.key for i, v in enumerate(rset.videos) if i not in val_idx]
    train_path.write_text("video_id\n" + "".join(f"{k}\n" for k in keep), encoding="utf-8")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "vid_key", "video_id", "sentence"])
    for n, i in enumerate(sorted(val_idx)):
        v = rset.videos[i]
        w.writerow([f"val{n}", f"msr{v.key.removeprefix('video')}", v.key, v.texts[0]])
    val_path.write_text(buf.getvalue(), encoding="utf-8")
    return train_path, val_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.data.retrieval", description="retrieval data tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("msrvtt-holdout", help="hold out N of the 9k training videos as a validation split")
    h.add_argument("--train-ids", required=True, type=Path, help="MSRVTT_train.9k.csv")
    h.add_argument("--data-json", required=True, type=Path, help="MSRVTT_data.json")
    h.add_argument("--out", required=True, type=Path)
    h.add_argument("--num-val", type=int, default=500)
    h.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check", help="load a split and report how many videos are found / decodable")
    c.add_argument("--config", required=True, type=Path, help="fine-tuning YAML (its eval section)")
    c.add_argument("--split", default="test")
    c.add_argument("--decode", action="store_true", help="also decode every video (slow)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "msrvtt-holdout":
        tr, va = msrvtt_holdout(args.train_ids, args.data_json, args.out, args.num_val, args.seed)
        print(f"wrote {tr} and {va}")
        return 0
    ecfg = load_config(args.config).eval
    rset = load_split(ecfg, args.split)
    res = resolve_videos(rset, Path(ecfg.videos))
    bad = 0
    if args.decode:
        for path in res.paths:
            try:
                decode_frames(path, ecfg.num_frames)
            except VideoDecodeError as e:
                bad += 1
                print(f"undecodable: {path}: {e}")
    texts, _ = rset.queries()
    print(f"{rset.dataset}/{args.split} ({rset.mode}): {len(rset.videos)} videos, {len(texts)} queries, "
          f"{len(res.missing)} missing, {bad} undecodable, {len(rset.skipped)} annotation rows skipped")  # fmt: skip
    for m in res.missing[:20]:
        print(f"missing: {m}")
    return 0 if res.videos else 1


if __name__ == "__main__":
    raise SystemExit(main())
