"""The synthetic corpus's downstream set in MSR-VTT's formats (MSRVTT_data.json, the train/val/test csvs):
distinct attribute sets within a split, so each query has exactly one right video."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthetic.content import Scene, caption, draw_attributes, query_sentences, random_scene
from synthetic.corpus_plan import RNG_DOWNSTREAM, CorpusConfig, random_id, rng_for


@dataclass
class DownstreamPlan:
    """What the downstream files and videos hold, drawn before anything is encoded."""

    records: list[dict[str, Any]]  # truth.json "downstream.videos"
    json_videos: list[dict[str, Any]]
    json_sentences: list[dict[str, Any]]
    scenes: list[Scene]
    num_frames: int


def plan_downstream(cfg: CorpusConfig) -> DownstreamPlan:
    """Videos per split (cfg.downstream_videos), their scenes, sentences and MSR-VTT records."""
    rng = rng_for(cfg.seed, RNG_DOWNSTREAM)
    splits = [("train", cfg.downstream_videos[0]), ("validate", cfg.downstream_videos[1])]
    splits.append(("test", cfg.downstream_videos[2]))
    fps = cfg.fps_fraction
    plan = DownstreamPlan([], [], [], [], max(2, round(cfg.downstream_seconds * float(fps))))
    for split, count in splits:
        # Distinct attribute sets within a split, so each query has one right video.
        for attrs in draw_attributes(rng, count):
            number = len(plan.records)
            video_id = f"video{number}"
            plan.scenes.append(random_scene(rng, attrs))
            sentences = query_sentences(rng, attrs, cfg.downstream_sentences)
            plan.records.append(
                {
                    "video_id": video_id,
                    "split": split,
                    "attributes": attrs.as_dict(),
                    "caption": caption(attrs),
                    "sentences": sentences,
                    "num_frames": plan.num_frames,
                    "fps": float(fps),
                }
            )
            plan.json_videos.append(
                {
                    "category": int(rng.integers(0, 20)),
                    "url": f"https://www.youtube.com/watch?v={random_id(rng)}",
                    "video_id": video_id,
                    "start time": 0.0,
                    "end time": round(plan.num_frames / float(fps), 3),
                    "split": split,
                    "id": number,
                }
            )
            for text in sentences:
                plan.json_sentences.append(
                    {"caption": text, "video_id": video_id, "sen_id": len(plan.json_sentences)}
                )
    return plan


def write_downstream_files(root: Path, plan: DownstreamPlan) -> dict[str, Any]:
    """The MSR-VTT annotation files; returns the downstream part of truth.json."""
    data = {"videos": plan.json_videos, "sentences": plan.json_sentences}
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    train = [r["video_id"] for r in plan.records if r["split"] == "train"]
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in train))
    for name, split in (("MSRVTT_JSFUSION_test.csv", "test"), ("MSRVTT_val.csv", "validate")):
        lines = ["key,vid_key,video_id,sentence\n"]
        for r in plan.records:
            if r["split"] == split:
                number = r["video_id"].removeprefix("video")
                lines.append(f"ret{number},msr{number},{r['video_id']},{r['sentences'][0]}\n")
        (root / name).write_text("".join(lines))
    return {
        "videos": plan.records,
        "files": {
            "data_json": "downstream/MSRVTT_data.json",
            "train_csv": "downstream/MSRVTT_train.9k.csv",
            "val_csv": "downstream/MSRVTT_val.csv",
            "test_csv": "downstream/MSRVTT_JSFUSION_test.csv",
            "videos": "downstream/videos",
        },
    }
