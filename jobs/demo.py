"""`make demo`: the whole toolkit end to end on an embedded default, on any machine.

Synthetic HD-VILA-format corpus -> caption job (embedded local Ray, untrained tiny OFA) -> NMI
language-gap analysis (MiniLM) -> short CLIP-ViP post-pretraining (tiny random CLIP) -> zero-shot and
fine-tuned retrieval evaluation on the synthetic MSR-VTT-format set. Every stage runs through its
public command line, exactly as a user would type it, so the demo also checks that those work.
Untrained models are labelled as such in every output they produce.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    name: str
    argv: list[str]
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def run(step: Step, log_dir: Path) -> None:
    """Run one stage, teeing its output to a log file; stop the demo on the first failure."""
    log = log_dir / f"{step.name}.log"
    print(f"\n=== {step.name}: {shlex.join(step.argv)}", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            step.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
        rc = proc.wait()
    step.seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"demo step '{step.name}' failed with exit code {rc}; log: {log}")


def write_sources(out: Path, corpus: Path, captions: Path) -> Path:
    """The NMI source registry for the demo corpus, in the same TOML format users write for real data."""
    toml = out / "sources.toml"
    toml.write_text(
        "\n".join(
            [
                "# Text sources of the demo corpus (paths relative to this file).",
                "[sources.hdvila_sub]",
                'format = "subtitles_jsonl"',
                f'path = "{os.path.relpath(corpus / "subtitles.jsonl", out)}"',
                "",
                "[sources.hdvila_cap]",
                'format = "captions_parquet"',
                f'path = "{os.path.relpath(captions / "captions.parquet", out)}"',
                "",
                "[sources.hdvila_cap_truth]",
                'format = "text_lines"',
                f'path = "{os.path.relpath(out / "truth_captions.txt", out)}"',
                "",
                "[sources.msrvtt]",
                'format = "msrvtt_json"',
                f'path = "{os.path.relpath(corpus / "downstream" / "MSRVTT_data.json", out)}"',
                "",
            ]
        )
    )
    truth = json.loads((corpus / "truth.json").read_text())
    clips = truth["clips"] if isinstance(truth, dict) and "clips" in truth else truth
    (out / "truth_captions.txt").write_text("\n".join(c["caption"] for c in clips) + "\n")
    return toml


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "demo_out")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--clips-per-video", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    out: Path = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    corpus, captions = out / "corpus", out / "captions"
    nmi_dir, pretrain, finetune = out / "nmi", out / "pretrain", out / "finetune"
    nmi_dir.mkdir(exist_ok=True)

    steps = [
        Step(
            "corpus",
            [py, "-m", "pipeline.corpus", "--out", str(corpus), "--videos", str(args.videos),
             "--clips-per-video", str(args.clips_per_video), "--seed", str(args.seed)],
            {"corpus": corpus},
        ),
        Step(
            "caption_job",
            [py, "jobs/caption_hdvila.py", "--metadata", str(corpus / "meta" / "*.jsonl"),
             "--videos", str(corpus / "videos"), "--layout", "full",
             "--subtitles", str(corpus / "subtitles.jsonl"), "--out", str(captions),
             "--captioner", "ofa-tiny-random", "--shard-size", "16", "--store-video", "--overwrite"],
            {"shards": captions / "shards", "captions": captions / "captions.parquet",
             "summary": captions / "summary.json"},
        ),
    ]
    for step in steps:
        run(step, logs)

    sources = write_sources(nmi_dir, corpus, captions)
    nmi_steps = []
    for src in ("hdvila_sub", "hdvila_cap", "hdvila_cap_truth"):
        nmi_steps.append(
            Step(
                f"nmi_{src}",
                [py, "analysis/nmi.py", "--src", src, "--tgt", "msrvtt", "--sources", str(sources),
                 "--encoder", "minilm", "--samples", "40", "--repeats", "10", "--allow-smaller",
                 "--seed", str(args.seed), "--cache-dir", str(nmi_dir / "cache"),
                 "--out", str(nmi_dir / f"{src}_vs_msrvtt.json")],
                {"json": nmi_dir / f"{src}_vs_msrvtt.json"},
            )
        )
    for step in nmi_steps:
        run(step, logs)

    train_steps = [
        Step(
            "pretrain",
            [py, "-m", "trainer.train", "trainer/configs/tiny_cpu.yaml",
             "--data.shards", str(captions), "--out", str(pretrain)],
            {"run": pretrain},
        ),
        Step(
            "zero_shot_eval",
            [py, "-m", "trainer.evaluate", "--config", "trainer/configs/finetune_synthetic_tiny.yaml",
             "--data-root", str(corpus / "downstream"), "--checkpoint", str(pretrain / "final"),
             "--out", str(out / "eval_zero_shot.json")],
            {"json": out / "eval_zero_shot.json"},
        ),
        Step(
            "finetune",
            ["bash", "trainer/run.sh", "trainer/configs/finetune_synthetic_tiny.yaml",
             "--data.root", str(corpus / "downstream"), "--init", str(pretrain / "final"),
             "--out", str(finetune)],
            {"run": finetune},
        ),
        Step(
            "finetuned_eval",
            [py, "-m", "trainer.evaluate", "--config", "trainer/configs/finetune_synthetic_tiny.yaml",
             "--data-root", str(corpus / "downstream"), "--checkpoint", str(finetune / "best"),
             "--out", str(out / "eval_finetuned.json")],
            {"json": out / "eval_finetuned.json"},
        ),
    ]
    for step in train_steps:
        run(step, logs)

    print_summary(out, steps + nmi_steps + train_steps)
    return 0


def print_summary(out: Path, steps: list[Step]) -> None:
    print("\n" + "=" * 78)
    print("clipvip demo finished (tiny UNTRAINED models where no weights were given)")
    print("=" * 78)
    print(f"{'stage':<22}{'seconds':>8}  outputs")
    for s in steps:
        first = True
        for label, path in s.outputs.items():
            print(f"{s.name if first else '':<22}{f'{s.seconds:.0f}' if first else '':>8}  {label}: {path}")
            first = False
    summary = json.loads((out / "captions" / "summary.json").read_text())
    print(f"\ncaption job: {json.dumps({k: summary[k] for k in sorted(summary) if not isinstance(summary[k], dict | list)})}")
    print("\nNMI vs msrvtt (MiniLM; higher = larger language gap):")
    for s in steps:
        if s.name.startswith("nmi_"):
            r = json.loads(s.outputs["json"].read_text())
            print(f"  {r['src']:<18} {r['nmi_mean']:.3f} +- {r['nmi_std']:.3f}")
    print("\nText-to-video retrieval on the synthetic MSR-VTT-format test set:")
    for name in ("eval_zero_shot", "eval_finetuned"):
        r = json.loads((out / f"{name}.json").read_text())
        print(f"  {name:<16} {json.dumps(r.get('summary', r))[:200]}")
    print(f"\nlogs: {out / 'logs'}")


if __name__ == "__main__":
    raise SystemExit(main())
