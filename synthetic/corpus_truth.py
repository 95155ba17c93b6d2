"""truth.json of the synthetic corpus: per video its frame times, per clip the frames the selection
rules of CONTRACTS §2 must pick, recomputed here from the exact frame times (not by the pipeline's code)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from synthetic.content import caption
from synthetic.corpus_plan import ClipPlan, CorpusConfig, VideoPlan, format_timestamp, frames_in, nearest


def sampled_positions(n: int, t: int) -> list[int]:
    """floor(linspace(0, n-1, t)) in exact integer arithmetic (CONTRACTS §2; repeats when n < t)."""
    return [k * (n - 1) // (t - 1) for k in range(t)] if t > 1 else [0]


def clip_truth(cfg: CorpusConfig, plan: VideoPlan, clip: ClipPlan) -> dict[str, Any]:
    """truth.json "clips" entry: span, texts, attributes and the right frames in both layouts."""
    times = [plan.time(i) for i in range(len(plan.pts))]
    start, stop = (Fraction(ms, 1000) for ms in clip.span_ms)
    indices = frames_in(times, start, stop)
    middle, _ = nearest(times, (start + stop) / 2)
    n = len(indices)
    sampled = [indices[p] for p in sampled_positions(n, cfg.sampled_frames)]
    return {
        "clip_id": clip.clip_id,
        "video_id": plan.video_id,
        "span": [format_timestamp(ms) for ms in clip.span_ms],
        "span_seconds": [ms / 1000 for ms in clip.span_ms],
        "fps": float(cfg.fps_fraction) if not plan.vfr else None,
        "caption": caption(clip.scene.attributes),
        "attributes": clip.scene.attributes.as_dict(),
        "subtitle": clip.subtitle,
        "full_layout": {
            "frame_indices": indices,
            "middle_index": middle,
            "middle_time": float(times[middle]),
            "sampled_indices": sampled,
            "sampled_times": [float(times[i]) for i in sampled],
        },
        "clips_layout": {
            "num_frames": n,
            "middle_index": n // 2,
            "sampled_indices": sampled_positions(n, cfg.sampled_frames),
        },
    }


def video_truth(cfg: CorpusConfig, plan: VideoPlan) -> dict[str, Any]:
    """truth.json "videos" entry: frame times, sizes, rotation, audio, GOP and clip ids."""
    coded = (cfg.height, cfg.width) if plan.rotation else (cfg.width, cfg.height)
    return {
        "video_id": plan.video_id,
        "path": f"videos/{plan.video_id}.mp4",
        "num_frames": len(plan.pts),
        "frame_times": [float(plan.time(i)) for i in range(len(plan.pts))],
        "fps": None if plan.vfr else float(cfg.fps_fraction),
        "vfr": plan.vfr,
        "width": cfg.width,  # display orientation
        "height": cfg.height,
        "coded_width": coded[0],
        "coded_height": coded[1],
        "rotation": plan.rotation,
        "audio": plan.audio,
        "gop": cfg.gop,
        "bframes": cfg.bframes,
        "clip_ids": [c.clip_id for c in plan.clips],
    }
