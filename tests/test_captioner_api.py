"""Captioner interface (CONTRACTS section 4): registry, OFA / tiny / noop captioners, preprocessing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ofa_fixtures import BPE_DIR, CKPT, load_golden, needs_bpe
from PIL import Image

import captioner
from captioner.__main__ import main as cli_main
from captioner.images import squash
from captioner.noop import NoopCaptioner
from captioner.ofa.captioner import OFACaptioner
from captioner.ofa.model import OFA
from captioner.ofa.preprocess import normalize, preprocess
from captioner.ofa.tokenizer import OFATokenizer

SIZES = [(240, 320), (96, 96), (37, 500), (720, 1280), (1, 1), (481, 479)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny() -> captioner.Captioner:
    return captioner.load("ofa-tiny-random", seed=0, batch_size=4)


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def test_registry_names_and_errors() -> None:
    assert {"ofa", "ofa-tiny-random", "noop"} <= set(captioner.available())
    with pytest.raises(ValueError, match="unknown captioner 'nope'"):
        captioner.load("nope")
    with pytest.raises(ValueError, match="already registered"):
        captioner.register("noop", NoopCaptioner)
    with pytest.raises(ValueError, match="cannot import"):
        captioner.load("no_such_module_xyz:factory")
    captioner.register("test-not-a-captioner", lambda: object(), overwrite=True)
    with pytest.raises(TypeError, match="lacks id/caption"):
        captioner.load("test-not-a-captioner")


class _Upper:
    id = "upper"

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return [f"{im.shape[0]}x{im.shape[1]}" for im in images]


def upper_factory(**_: object) -> _Upper:
    return _Upper()


def test_new_backends_without_touching_callers() -> None:
    captioner.register("test-upper", upper_factory, overwrite=True)
    im = np.zeros((4, 5, 3), np.uint8)
    assert captioner.load("test-upper").caption([im]) == ["4x5"]
    assert captioner.load("tests.test_captioner_api:upper_factory").caption([im]) == ["4x5"]
    assert isinstance(captioner.load("test-upper"), captioner.Captioner)


def test_noop() -> None:
    cap = captioner.load("noop")
    assert cap.id == "noop"
    assert cap.caption(_images()) == [""] * len(SIZES)
    assert cap.caption([]) == []
    assert (
        captioner.load("noop", batch_size=8, device="cuda", dtype="float16").id == "noop"
    )  # drop-in for jobs
    with pytest.raises(ValueError, match="image 1"):
        cap.caption([np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8)])


def test_tiny_random_captions_images_of_any_size(tiny: captioner.Captioner) -> None:
    assert tiny.id == "ofa-tiny-random(untrained,seed=0)"
    images = _images()
    caps = tiny.caption(images)
    assert len(caps) == len(images) and all(isinstance(c, str) and c for c in caps)
    assert all(c == c.strip() and not any(p in c for p in ".,?!") for c in caps)
    assert tiny.caption([]) == []


def test_tiny_random_is_deterministic_and_batch_invariant(tiny: captioner.Captioner) -> None:
    images = _images()
    batched = tiny.caption(images)  # batch_size 4: two batches, the second partial
    assert [tiny.caption([im])[0] for im in images] == batched
    again = captioner.load("ofa-tiny-random", seed=0, batch_size=64)
    assert again.caption(images) == batched
    other = captioner.load("ofa-tiny-random", seed=1)
    assert other.id == "ofa-tiny-random(untrained,seed=1)"


def test_tiny_random_captions_depend_on_the_image(tiny: captioner.Captioner) -> None:
    colours = [np.full((64, 64, 3), c, np.uint8) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)]]
    noise = _images(3)
    assert len(set(tiny.caption(colours + noise))) > 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((8, 8), np.uint8), "H x W x 3 uint8"),
        (np.zeros((8, 8, 4), np.uint8), "H x W x 3 uint8"),
        (np.zeros((8, 8, 3), np.float32), "H x W x 3 uint8"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        ("frame.jpg", "numpy array"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_item(
    tiny: captioner.Captioner, bad: object, message: str
) -> None:
    with pytest.raises(ValueError, match=f"image 1: .*{message}"):
        tiny.caption([np.zeros((8, 8, 3), np.uint8), bad])  # type: ignore[list-item]


def test_preprocessing_is_pil_bicubic_and_half_normalisation() -> None:
    im = _images()[0]
    resized = squash(im, 480)
    assert resized.shape == (480, 480, 3) and resized.dtype == np.uint8
    assert np.array_equal(
        resized, np.asarray(Image.fromarray(im).resize((480, 480), Image.Resampling.BICUBIC))
    )
    x = preprocess([im, im], 480)
    assert x.shape == (2, 3, 480, 480) and x.dtype == torch.float32
    expected = (torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.equal(x[0], expected)
    assert normalize(torch.zeros(1, 4, 4, 3, dtype=torch.uint8)).eq(-1).all()
    assert normalize(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)).eq(1).all()


@needs_bpe
def test_ofa_captioner_end_to_end_matches_reference_captions() -> None:
    """Golden images (uint8, already 96x96) through the whole captioner give OFA's best captions."""
    gold = load_golden()
    model = OFA.from_checkpoint(CKPT)
    tok = OFATokenizer.from_dir(BPE_DIR, model.cfg.code_dict_size, model.cfg.num_bins, model.cfg.vocab_size)
    assert tok.vocab_size == 317 and tok.symbols[300] == "<mask>" and tok.symbols[316] == "<bin_7>"
    cap = OFACaptioner(model, tok, "test", batch_size=2, prompt=gold["inputs"]["src_text"])
    images = [im.permute(1, 2, 0).numpy() for im in gold["inputs"]["patch_images_uint8"]]
    assert cap.caption(images) == [sample[0]["caption"] for sample in gold["generate_ngram3"]]


@needs_bpe
def test_load_ofa_by_name() -> None:
    cap = captioner.load("ofa", checkpoint=CKPT, bpe_dir=BPE_DIR, device="cpu", dtype="float32", batch_size=2)
    assert cap.id.startswith("ofa(tiny_ofa_caption_ckpt.pt.xz,sha256=31eb73a768a4,float32,beam=5)")
    caps = cap.caption(_images()[:3])
    assert len(caps) == 3 and all(isinstance(c, str) for c in caps)


def test_ofa_needs_a_matching_tokenizer(tmp_path: Path) -> None:
    model = OFA.from_checkpoint(CKPT)
    from captioner.ofa.tokenizer import TinyTokenizer

    with pytest.raises(ValueError, match="vocabulary"):
        OFACaptioner(model, TinyTokenizer(), "x")


def _write_images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, im in enumerate(_images()[:3]):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(im).save(paths[-1])
    gray = tmp_path / "gray.jpg"
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(gray)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    return [*paths, bad, gray]


def test_cli_plain_and_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: captioner.Captioner
) -> None:
    paths = _write_images(tmp_path)
    rc = cli_main(["--captioner", "ofa-tiny-random", "--batch-size", "2", *map(str, paths)])
    out, err = capsys.readouterr()
    assert rc == 1, "one unreadable image -> exit code 1, the others still captioned"
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in paths if p.name != "bad.jpg"]
    expected = tiny.caption([np.asarray(Image.open(p).convert("RGB")) for p in paths if p.name != "bad.jpg"])
    assert [line.split("\t")[1] for line in lines] == expected
    assert "bad.jpg: cannot read image" in err

    rc = cli_main(["--captioner", "ofa-tiny-random", "--jsonl", "--no-progress", *map(str, paths)])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in paths]
    assert [r["caption"] for r in records if r["error"] is None] == expected
    assert records[3]["caption"] is None and "cannot read image" in records[3]["error"]


def test_cli_requires_checkpoint_for_ofa(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["x.jpg"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli_main([*argv, "x.jpg"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    return err


def test_cli_refuses_unusable_captioner_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Missing / unreadable checkpoint, empty BPE dir, bad model dir, foreign option: exit 2 before any work."""
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "checkpoint not found" in _refused(
        capsys, "--checkpoint", str(tmp_path / "no.pt"), "--bpe-dir", str(empty)
    )
    assert "junk.pt: refused" in _refused(capsys, "--checkpoint", str(junk), "--bpe-dir", str(empty))
    assert "does not exist" in _refused(
        capsys, "--checkpoint", str(junk), "--bpe-dir", str(tmp_path / "nope")
    )
    assert "does not exist" in _refused(capsys, "--captioner", "blip", "--model-dir", str(tmp_path / "nope"))
    assert "config.json" in _refused(capsys, "--captioner", "florence2", "--model-dir", str(empty))
    assert "needs a model directory" in _refused(capsys, "--captioner", "blip")
    assert "does not take model_dir" in _refused(
        capsys, "--captioner", "ofa-tiny-random", "--model-dir", str(empty)
    )
    assert "--batch-size must be >= 1" in _refused(capsys, "--captioner", "noop", "--batch-size", "0")
    assert "unknown captioner 'nope'" in _refused(capsys, "--captioner", "nope")


@needs_bpe
def test_cli_refuses_a_bpe_dir_without_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "lacks encoder.json" in _refused(capsys, "--checkpoint", str(CKPT), "--bpe-dir", str(empty))


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == captioner.available()
    shipped = {
        "ofa",
        "ofa-tiny-random",
        "blip",
        "blip-tiny-random",
        "florence2",
        "florence2-tiny-random",
        "noop",
    }
    needs = {line.split()[0]: line.split(None, 1)[1:] for line in lines}
    assert all(needs[name] for name in shipped)  # every shipped name says what it needs
    assert any(line.startswith("blip-tiny-random") and "UNTRAINED" in line for line in lines)


@needs_bpe
def test_cli_with_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _write_images(tmp_path)[:2]
    argv = ["--checkpoint", str(CKPT), "--bpe-dir", str(BPE_DIR), "--device", "cpu", *map(str, paths)]
    assert cli_main(argv) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
