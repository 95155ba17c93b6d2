"""`make demo`: the whole toolkit end to end on an embedded default, on any machine.

Synthetic HD-VILA-format corpus -> caption job (embedded local Ray, untrained tiny OFA) and the same
clips through a second, transformers-native captioner family (untrained tiny Florence-2) -> NMI
language-gap analysis (MiniLM) and the captioner comparison (gap report, text statistics, HTML
gallery) -> short CLIP-ViP post-pretraining (tiny random CLIP) -> zero-shot and fine-tuned retrieval
evaluation on the synthetic MSR-VTT-format set. Every stage runs through its
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
from collections.abc import Callable
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


def write_refs(out: Path, corpus: Path) -> Path:
    """Reference captions for the comparison: the corpus's own descriptive caption of each clip."""
    truth = json.loads((corpus / "truth.json").read_text())
    refs = out / "refs.jsonl"
    refs.write_text(
        "".join(json.dumps({"clip_id": c["clip_id"], "text": c["caption"]}) + "\n" for c in truth["clips"])
    )
    return refs


SECOND_CAPTIONER = "florence2-tiny-random"  # the transformers family beside OFA
SECOND_LABEL = SECOND_CAPTIONER.split("-")[0]


@dataclass
class Paths:
    out: Path
    corpus: Path
    captions: Path  # caption job OUT with the tiny OFA (the paper's captioner)
    captions2: Path  # the same clips captioned by a tiny transformers family
    nmi: Path
    pretrain: Path
    finetune: Path

    @classmethod
    def under(cls, out: Path) -> Paths:
        return cls(out, out / "corpus", out / "captions", out / f"captions_{SECOND_LABEL}",
                   out / "nmi", out / "pretrain", out / "finetune")  # fmt: skip


# fmt: off
def data_steps(p: Paths, cmd: Callable[..., list[str]], n_videos: int, clips_per_video: int) -> list[Step]:
    """Corpus, then the caption job twice: the paper's captioner and a modern family on the same clips."""
    meta, videos, subs = p.corpus / "meta" / "*.jsonl", p.corpus / "videos", p.corpus / "subtitles.jsonl"
    job = ("{py} jobs/caption_hdvila.py --metadata {meta} --videos {videos} --layout full --subtitles {subs}"
           " --out {out} --shard-size 16 --overwrite")
    return [
        Step("corpus",
             cmd("{py} -m synthetic.corpus --out {corpus} --videos {n} --clips-per-video {k} --seed {seed}"
                 " --downstream 32 16 16 --overwrite", corpus=p.corpus, n=n_videos, k=clips_per_video),
             {"corpus": p.corpus}),
        Step("caption_job",
             cmd(job + " --captioner ofa-tiny-random --store-video", meta=meta, videos=videos, subs=subs,
                 out=p.captions),
             {"shards": p.captions / "shards", "captions": p.captions / "captions.parquet",
              "summary": p.captions / "summary.json"}),
        Step("caption_job_2",  # middle frames only: the comparison needs captions, not training frames
             cmd(job + " --frames 0 --captioner " + SECOND_CAPTIONER, meta=meta, videos=videos, subs=subs,
                 out=p.captions2),
             {"captions": p.captions2 / "captions.parquet"}),
    ]


def analysis_steps(p: Paths, cmd: Callable[..., list[str]], n_texts: int) -> list[Step]:
    """The paper's NMI table, then the captioner comparison (gap report, text statistics, gallery)."""
    sources = write_sources(p.nmi, p.corpus, p.captions)
    common = (" --sources {sources} --encoder minilm --samples {n} --repeats 10 --allow-smaller --seed {seed}"
              " --cache-dir {cache} --no-progress")
    paths = {"sources": sources, "n": n_texts, "cache": p.nmi / "cache"}
    return [
        Step("nmi",
             cmd("{py} analysis/nmi.py --src hdvila_sub,hdvila_cap,hdvila_cap_truth --tgt msrvtt"
                 + common + " --out {json} --plot {png}", json=p.nmi / "nmi.json", png=p.nmi / "nmi.png", **paths),
             {"json": p.nmi / "nmi.json", "csv": p.nmi / "nmi.csv", "plot": p.nmi / "nmi.png"}),
        Step("compare",
             cmd("{py} -m analysis.compare --runs ofa={ofa} " + SECOND_LABEL + "={other} --tgt msrvtt --refs {refs}"
                 + common + " --out {out}", ofa=p.captions, other=p.captions2,
                 refs=write_refs(p.nmi, p.corpus), out=p.out / "compare", **paths),
             {"json": p.out / "compare" / "compare.json", "plots": p.out / "compare" / "compare.png",
              "gallery": p.out / "compare" / "gallery.html"}),
    ]


def training_steps(p: Paths, cmd: Callable[..., list[str]], pretrain_steps: int, finetune_steps: int) -> list[Step]:
    """Post-pretraining on the shards, then zero-shot, fine-tuning and fine-tuned retrieval evaluation."""
    ft_config = write_finetune_config(p.out, p.corpus / "downstream", p.pretrain / "model", p.finetune,
                                      finetune_steps)
    evaluate = "{py} -m trainer.evaluate --config {cfg} --checkpoint {ckpt} --split test --out {json}"
    return [
        Step("pretrain",
             cmd("bash trainer/run.sh trainer/configs/tiny_cpu.yaml --data.shards [{shards}] --out_dir {out}"
                 " --schedule.total_steps {steps}", shards=p.captions, out=p.pretrain, steps=pretrain_steps),
             {"model": p.pretrain / "model", "loss curves": p.pretrain / "loss_curves.png"}),
        Step("zero_shot_eval",
             cmd(evaluate, cfg=ft_config, ckpt=p.pretrain / "model", json=p.out / "eval_zero_shot.json"),
             {"json": p.out / "eval_zero_shot.json"}),
        Step("finetune", cmd("bash trainer/run.sh {cfg}", cfg=ft_config),
             {"best": p.finetune / "best", "loss curves": p.finetune / "loss_curves.png"}),
        Step("finetuned_eval",
             cmd(evaluate, cfg=ft_config, ckpt=p.finetune / "best", json=p.out / "eval_finetuned.json"),
             {"json": p.out / "eval_finetuned.json"}),
    ]
# fmt: on


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "demo_out")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--clips-per-video", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=300)
    args = ap.parse_args(argv)

    p = Paths.under(args.out.resolve())
    logs = p.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    p.nmi.mkdir(exist_ok=True)

    def cmd(template: str, **paths: object) -> list[str]:
        """A stage's command line, written as a user would type it (paths are quoted, then split)."""
        quoted = {k: shlex.quote(str(v)) for k, v in paths.items()}
        return shlex.split(template.format(py=shlex.quote(sys.executable), seed=args.seed, **quoted))

    done: list[Step] = []
    # Each phase's commands are built after the previous phase ran: they read its outputs.
    phases: list[Callable[[], list[Step]]] = [
        lambda: data_steps(p, cmd, args.videos, args.clips_per_video),
        lambda: analysis_steps(p, cmd, args.videos * args.clips_per_video),
        lambda: training_steps(p, cmd, args.pretrain_steps, args.finetune_steps),
    ]
    for phase in phases:
        for step in phase():
            run(step, logs)
            done.append(step)
    print_summary(p.out, done)
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
    print_comparison(out / "compare" / "compare.json")

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


def print_comparison(path: Path) -> None:
    """Per captioner: the gap to the queries (NMI k=2 with its bootstrap CI, MMD2), words, BLEU-4/CIDEr-D
    against the corpus's descriptive captions, and measured captioner speed on this machine."""
    rep = json.loads(path.read_text())
    print(f"\nCaptioner comparison vs {', '.join(rep['targets'])} (untrained models: "
          f"{', '.join(rep['untrained_models']) or 'none'}):")  # fmt: skip
    print(f"  {'captioner':<12}{'NMI':>7}{'CI':>16}{'MMD2':>8}{'words':>7}{'dist-1':>8}{'BLEU-4':>8}"
          f"{'CIDEr-D':>9}{'img/s':>8}")  # fmt: skip
    for row in rep["captioners"]:
        g = row["gap"][0] if row["gap"] else {}
        ci = g.get("nmi_ci") or [float("nan")] * 2
        ref = row.get("references") or {}
        speed = row["speed"].get("caption_images_per_s")
        print(
            f"  {row['label']:<12}{g.get('nmi_mean', float('nan')):>7.3f}{f'[{ci[0]:.3f}, {ci[1]:.3f}]':>16}"
            f"{g.get('mmd2_mean', float('nan')):>8.3f}{row['text']['words_mean']:>7.1f}{row['text']['distinct_1']:>8.3f}"
            f"{ref.get('bleu4', float('nan')):>8.3f}{ref.get('cider_d', float('nan')):>9.3f}"
            f"{speed if speed is not None else float('nan'):>8.1f}"
        )
    print(f"  gallery: {path.parent / 'gallery.html'}")


if __name__ == "__main__":
    raise SystemExit(main())
