"""Synthetic HD-VILA-format corpus: real files in real formats, fake (but learnable) content.

``python -m synthetic.corpus --out DIR --videos N --clips-per-video K --seed S`` writes:

    DIR/meta/part0.jsonl          HD-VILA metadata lines (11-char ids, spans "HH:MM:SS.mmm")
    DIR/videos/<video_id>.mp4     `full` layout: H.264, GOP `gop`, B-frames, yuv420p
    DIR/clips/<video_id>/<clip_id> `clips` layout: each clip re-encoded from exactly its span's frames
    DIR/subtitles.jsonl           {"clip_id", "text"}: ASR-like text naming the content loosely
    DIR/downstream/               MSR-VTT files (csv/json) and downstream/videos/<video_id>.mp4
    DIR/truth.json                written last: what every frame, clip and video holds

Every frame carries its index within its file (`synthetic.stamp`), and truth.json gives, per clip, the
frames the selection rules of CONTRACTS §2 must pick, computed here from the exact frame times. Span
boundaries lie half a frame away from any frame time and every middle point is at least 1 ms closer
to one frame than to any other, so float rounding in a reader cannot change the right answer.
Output is deterministic by seed (libx264 runs single-threaded and without mbtree; files are bitwise identical).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text_atomic
from pipeline.cli import UserError, output_dir, run_cli, show_defaults
from synthetic.corpus_downstream import plan_downstream, write_downstream_files
from synthetic.corpus_encode import run_jobs, write_downstream_video, write_full_video
from synthetic.corpus_plan import CorpusConfig, format_timestamp, plan_video, plan_video_ids
from synthetic.corpus_truth import clip_truth, sampled_positions, video_truth
from synthetic.pathologies import check_pathologies, write_pathologies

# The corpus's public API (docs/CORPUS.md); the parts live in synthetic/corpus_*.py.
__all__ = [
    "CorpusConfig",
    "CorpusManifest",
    "generate",
    "generate_from_config",
    "load_manifest",
    "main",
    "sampled_positions",
]

log = logging.getLogger(__name__)

# The layouts and files the generator owns inside DIR (removed by overwrite=True, nothing else).
_OUTPUTS = ("meta", "videos", "clips", "downstream", "subtitles.jsonl", "truth.json")


@dataclass(frozen=True)
class CorpusManifest:
    """Paths of a generated corpus (see the module docstring for the layout)."""

    root: Path
    metadata: Path
    videos: Path
    clips: Path
    subtitles: Path
    truth: Path
    downstream: Path
    video_ids: tuple[str, ...]
    clip_ids: tuple[str, ...]
    downstream_ids: tuple[str, ...]
    config: CorpusConfig = field(compare=False)

    def load_truth(self) -> dict[str, Any]:
        return json.loads(self.truth.read_text())


def _prepare_out(out: Path, overwrite: bool) -> None:
    existing = [name for name in _OUTPUTS if (out / name).exists()]
    # Without truth.json (written last) the outputs are an interrupted run's: the corpus is a pure
    # function of its config, so the rerun replaces them, which is how it resumes.
    if existing and not overwrite and (out / "truth.json").exists():
        raise FileExistsError(f"{out} already holds a corpus ({', '.join(existing)}); pass overwrite=True")
    for name in existing:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    out: Path,
    videos: int = CorpusConfig.videos,
    clips_per_video: int = CorpusConfig.clips_per_video,
    seed: int = CorpusConfig.seed,
    *,
    overwrite: bool = False,
    workers: int = 1,
    **options: Any,
) -> CorpusManifest:
    """Write a corpus under `out`; `options` are any other `CorpusConfig` fields (width, fps, gop, ...)."""
    cfg = CorpusConfig(videos=videos, clips_per_video=clips_per_video, seed=seed, **options)
    return generate_from_config(Path(out), cfg, overwrite=overwrite, workers=workers)


def generate_from_config(
    out: Path, cfg: CorpusConfig, *, overwrite: bool = False, workers: int = 1
) -> CorpusManifest:
    """Write the corpus of `cfg` under `out`; `workers` processes encode files in parallel (same bytes)."""
    cfg.validate()
    _prepare_out(out, overwrite)
    for name in ("meta", "videos", "clips", "downstream/videos"):
        (out / name).mkdir(parents=True)
    started = time.monotonic()
    video_ids = plan_video_ids(cfg.seed, cfg.videos)
    plans = [plan_video(cfg, k, vid) for k, vid in enumerate(video_ids)]
    downstream = plan_downstream(cfg)
    jobs: list[tuple[str, Callable[..., int], tuple[Any, ...]]] = [
        (f"video {p.video_id}", write_full_video, (out, cfg, p)) for p in plans
    ]
    for record, scene in zip(downstream.records, downstream.scenes, strict=True):
        path = out / "downstream" / "videos" / f"{record['video_id']}.mp4"
        jobs.append(
            (
                f"downstream {record['video_id']}",
                write_downstream_video,
                (path, cfg, scene, downstream.num_frames),
            )
        )
    run_jobs(jobs, workers)

    with (out / "meta" / "part0.jsonl").open("w") as fh:
        for plan in plans:
            line = {
                "video_id": plan.video_id,
                "url": f"https://www.youtube.com/watch?v={plan.video_id}",
                "clip": [
                    {"clip_id": c.clip_id, "span": [format_timestamp(ms) for ms in c.span_ms]}
                    for c in plan.clips
                ],
            }
            fh.write(json.dumps(line) + "\n")
    with (out / "subtitles.jsonl").open("w") as fh:
        for plan in plans:
            for clip in plan.clips:
                fh.write(json.dumps({"clip_id": clip.clip_id, "text": clip.subtitle}) + "\n")
    downstream_truth = write_downstream_files(out / "downstream", downstream)
    downstream_ids = [r["video_id"] for r in downstream.records]
    truth = {
        "format": "clipvip-synthetic-corpus/1",
        "config": asdict(cfg),
        "T": cfg.sampled_frames,
        "videos": [video_truth(cfg, p) for p in plans],
        "clips": [clip_truth(cfg, p, c) for p in plans for c in p.clips],
        "downstream": downstream_truth,
    }
    write_text_atomic(out / "truth.json", json.dumps(truth, indent=1))  # last: marks a complete corpus
    log.info("corpus of %d videos written to %s in %.1fs", cfg.videos, out, time.monotonic() - started)
    return _manifest(out, cfg, video_ids, [c.clip_id for p in plans for c in p.clips], downstream_ids)


def _manifest(
    out: Path,
    cfg: CorpusConfig,
    video_ids: Sequence[str],
    clip_ids: Sequence[str],
    downstream_ids: Sequence[str],
) -> CorpusManifest:
    return CorpusManifest(
        root=out,
        metadata=out / "meta" / "part0.jsonl",
        videos=out / "videos",
        clips=out / "clips",
        subtitles=out / "subtitles.jsonl",
        truth=out / "truth.json",
        downstream=out / "downstream",
        video_ids=tuple(video_ids),
        clip_ids=tuple(clip_ids),
        downstream_ids=tuple(downstream_ids),
        config=cfg,
    )


def load_manifest(root: Path) -> CorpusManifest:
    """Manifest of a corpus generated earlier (reads truth.json; fails if generation did not finish)."""
    root = Path(root)
    truth = json.loads((root / "truth.json").read_text())
    raw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in truth["config"].items()}
    cfg = CorpusConfig(**raw)
    return _manifest(
        root,
        cfg,
        [v["video_id"] for v in truth["videos"]],
        [c["clip_id"] for c in truth["clips"]],
        [v["video_id"] for v in truth["downstream"]["videos"]],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: exit status 0 written, 2 a user error (one line), 130 interrupted."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    d = CorpusConfig()
    p = argparse.ArgumentParser(prog="python -m synthetic.corpus", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--videos", type=int, default=d.videos)
    p.add_argument("--clips-per-video", type=int, default=d.clips_per_video)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--gop", type=int, default=d.gop)
    p.add_argument("--bframes", type=int, default=d.bframes)
    p.add_argument("--crf", type=int, default=d.crf)
    p.add_argument("--clip-seconds", type=float, nargs=2, default=d.clip_seconds, metavar=("MIN", "MAX"))
    p.add_argument("--gap-seconds", type=float, nargs=2, default=d.gap_seconds, metavar=("MIN", "MAX"))
    p.add_argument(
        "--downstream", type=int, nargs=3, default=d.downstream_videos, metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument("--downstream-seconds", type=float, default=d.downstream_seconds)
    p.add_argument("--downstream-sentences", type=int, default=d.downstream_sentences)
    p.add_argument("--rotated-videos", type=int, default=d.rotated_videos)
    p.add_argument("--vfr-videos", type=int, default=d.vfr_videos)
    p.add_argument("--audio-videos", type=int, default=d.audio_videos)
    p.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    p.add_argument("--workers", type=int, default=1, help="encoding processes (output is identical)")
    p.add_argument(
        "--pathologies",
        action="store_true",
        help="instead: write the decoding-pathology corpus to OUT/pathologies and check this build's "
        "decoders on it (exit 1 on any wrong frame)",
    )
    args = show_defaults(p).parse_args(argv)
    output_dir(args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.pathologies:
        return _pathologies_main(args.out / "pathologies")
    try:
        manifest = generate(
            args.out,
            args.videos,
            args.clips_per_video,
            args.seed,
            overwrite=args.overwrite,
            workers=args.workers,
            width=args.width,
            height=args.height,
            fps=args.fps,
            gop=args.gop,
            bframes=args.bframes,
            crf=args.crf,
            clip_seconds=tuple(args.clip_seconds),
            gap_seconds=tuple(args.gap_seconds),
            downstream_videos=tuple(args.downstream),
            downstream_seconds=args.downstream_seconds,
            downstream_sentences=args.downstream_sentences,
            rotated_videos=args.rotated_videos,
            vfr_videos=args.vfr_videos,
            audio_videos=args.audio_videos,
        )
    except (ValueError, FileExistsError) as exc:
        raise UserError(str(exc)) from None
    print(json.dumps({k: str(v) for k, v in asdict(manifest).items() if isinstance(v, Path)}, indent=1))
    return 0


def _pathologies_main(out: Path) -> int:
    """Write synthetic.pathologies into `out` and report, per decoder, every clip stored with a wrong frame."""
    truth = write_pathologies(out)
    report: dict[str, Any] = {"out": str(out), "files": sorted(truth)}
    for decoder in ("pyav", "decord"):
        report[decoder] = check_pathologies(out, decoder)
    print(json.dumps(report, indent=1))
    return 1 if report["pyav"] or report["decord"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
