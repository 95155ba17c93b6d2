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

import yaml

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
                'path = "truth_captions.txt"',  # written next to this file, below
                "",
                "[sources.msrvtt]",
                'format = "msrvtt_json"',
                f'path = "{os.path.relpath(corpus / "downstream" / "MSRVTT_data.json", out)}"',
                "",
            ]
        )
    )
    truth = json.loads((corpus / "truth.json").read_text())
    (out / "truth_captions.txt").write_text("\n".join(c["caption"] for c in truth["clips"]) + "\n")
    return toml


def write_finetune_config(out: Path, downstream: Path, init: Path, run_dir: Path, steps: int) -> Path:
    """The tiny fine-tuning recipe pointed at the demo's downstream set, starting from the post-pretrained model."""
    cfg = yaml.safe_load((ROOT / "trainer/configs/finetune_synthetic_tiny.yaml").read_text())
    dataset = dict(cfg["data"]["retrieval"])
    dataset["videos"] = str(downstream / "videos")
    dataset["annotations"] = {
        "train_ids": str(downstream / "MSRVTT_train.9k.csv"),
        "data_json": str(downstream / "MSRVTT_data.json"),
        "val_csv": str(downstream / "MSRVTT_val.csv"),
        "test_csv": str(downstream / "MSRVTT_JSFUSION_test.csv"),
    }
    cfg["data"]["retrieval"] = dataset
    cfg["eval"] = {**cfg["eval"], **dataset}
    cfg["model"] = {"init": str(init), "num_proxies": 3, "num_frames": 12, "video_head": "vip"}
    cfg["tokenizer"] = {"path": str(init)}
    cfg["out_dir"] = str(run_dir)
    cfg["schedule"]["total_steps"] = steps
    path = out / "finetune_demo.yaml"
    path.write_text(
        "# Written by jobs/demo.py from trainer/configs/finetune_synthetic_tiny.yaml\n" + yaml.safe_dump(cfg)
    )
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "demo_out")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--clips-per-video", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=300)
    args = ap.parse_args(argv)

    out: Path = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    corpus, captions = out / "corpus", out / "captions"
    nmi_dir, pretrain, finetune = out / "nmi", out / "pretrain", out / "finetune"
    nmi_dir.mkdir(exist_ok=True)

    # fmt: off
    def cmd(template: str, **paths: object) -> list[str]:
        """A stage's command line, written as a user would type it (paths are quoted, then split)."""
        quoted = {k: shlex.quote(str(v)) for k, v in paths.items()}
        return shlex.split(template.format(py=shlex.quote(py), seed=args.seed, **quoted))

    steps = [
        Step(
            "corpus",
            cmd(
                "{py} -m synthetic.corpus --out {corpus} --videos {n} --clips-per-video {k} --seed {seed}"
                " --downstream 32 16 16 --overwrite",
                corpus=corpus, n=args.videos, k=args.clips_per_video,
            ),
            {"corpus": corpus},
        ),
        Step(
            "caption_job",
            cmd(
                "{py} jobs/caption_hdvila.py --metadata {meta} --videos {videos} --layout full"
                " --subtitles {subs} --out {out} --captioner ofa-tiny-random --shard-size 16 --store-video"
                " --overwrite",
                meta=corpus / "meta" / "*.jsonl", videos=corpus / "videos", subs=corpus / "subtitles.jsonl",
                out=captions,
            ),
            {"shards": captions / "shards", "captions": captions / "captions.parquet",
             "summary": captions / "summary.json"},
        ),
    ]
    for step in steps:
        run(step, logs)

    sources = write_sources(nmi_dir, corpus, captions)
    nmi_steps = [
        Step(
            "nmi",
            cmd(
                "{py} analysis/nmi.py --src hdvila_sub,hdvila_cap,hdvila_cap_truth --tgt msrvtt"
                " --sources {sources} --encoder minilm --samples {n} --repeats 10 --allow-smaller --seed {seed}"
                " --cache-dir {cache} --out {json} --plot {png} --no-progress",
                sources=sources, n=args.videos * args.clips_per_video, cache=nmi_dir / "cache",
                json=nmi_dir / "nmi.json", png=nmi_dir / "nmi.png",
            ),
            {"json": nmi_dir / "nmi.json", "csv": nmi_dir / "nmi.csv", "plot": nmi_dir / "nmi.png"},
        )
    ]
    for step in nmi_steps:
        run(step, logs)

    ft_config = write_finetune_config(
        out, corpus / "downstream", pretrain / "model", finetune, args.finetune_steps
    )
    train_steps = [
        Step(
            "pretrain",
            cmd(
                "bash trainer/run.sh trainer/configs/tiny_cpu.yaml --data.shards [{shards}] --out_dir {out}"
                " --schedule.total_steps {steps}",
                shards=captions, out=pretrain, steps=args.pretrain_steps,
            ),
            {"model": pretrain / "model", "loss curves": pretrain / "loss_curves.png"},
        ),
        Step(
            "zero_shot_eval",
            cmd(
                "{py} -m trainer.evaluate --config {cfg} --checkpoint {ckpt} --split test --out {json}",
                cfg=ft_config, ckpt=pretrain / "model", json=out / "eval_zero_shot.json",
            ),
            {"json": out / "eval_zero_shot.json"},
        ),
        Step(
            "finetune",
            cmd("bash trainer/run.sh {cfg}", cfg=ft_config),
            {"best": finetune / "best", "loss curves": finetune / "loss_curves.png"},
        ),
        Step(
            "finetuned_eval",
            cmd(
                "{py} -m trainer.evaluate --config {cfg} --checkpoint {ckpt} --split test --out {json}",
                cfg=ft_config, ckpt=finetune / "best", json=out / "eval_finetuned.json",
            ),
            {"json": out / "eval_finetuned.json"},
        ),
    ]
    for step in train_steps:
        run(step, logs)
    # fmt: on

    print_summary(out, steps + nmi_steps + train_steps)
    return 0


def print_summary(out: Path, steps: list[Step]) -> None:
    print("\n" + "=" * 78)
    print("clipvip demo finished; tiny UNTRAINED models wherever no weights were given:")
    print("captions from ofa-tiny-random, CLIP-ViP trained from a random tiny CLIP on CPU.")
    print("=" * 78)
    print(f"{'stage':<16}{'seconds':>8}  outputs")
    for s in steps:
        for i, (label, path) in enumerate(s.outputs.items()):
            name, secs = (s.name, f"{s.seconds:.0f}") if i == 0 else ("", "")
            print(f"{name:<16}{secs:>8}  {label}: {path}")

    summary = json.loads((out / "captions" / "summary.json").read_text())
    counts = summary.get("counts", {})
    print(
        f"\ncaption job: {summary.get('total_clips')} clips {counts}, captioner {summary.get('captioner')}, "
        f"{summary.get('clips_per_s', 0):.2f} clips/s"
    )

    table = json.loads((out / "nmi" / "nmi.json").read_text())
    print("\nLanguage domain gap vs the MSR-VTT-format queries (NMI, MiniLM; higher = larger gap):")
    for r in table["results"]:
        print(f"  {r['src']:<18} {r['nmi_mean']:.3f} +- {r['nmi_std']:.3f}  ({r['samples']} texts a side)")
    print("  (hdvila_cap_truth = the corpus's descriptive captions: what a trained captioner would write)")

    print(
        "\nText-to-video retrieval, synthetic MSR-VTT-format test set (percent; chance R@1 = "
        f"{100 / max(1, json.loads((out / 'eval_zero_shot.json').read_text())['videos_evaluated']):.1f}):"
    )
    print(f"  {'':<22}{'R@1':>6}{'R@5':>6}{'R@10':>6}{'MdR':>6}{'DSL R@1':>9}")
    for name, label in (("eval_zero_shot", "post-pretrained (zs)"), ("eval_finetuned", "fine-tuned")):
        r = json.loads((out / f"{name}.json").read_text())
        print(
            f"  {label:<22}{r['t2v_R1']:>6.1f}{r['t2v_R5']:>6.1f}{r['t2v_R10']:>6.1f}{r['t2v_MdR']:>6.1f}"
            f"{r['dsl_t2v_R1']:>9.1f}"
        )
    print(f"\nlogs: {out / 'logs'}")


if __name__ == "__main__":
    raise SystemExit(main())
