"""Loading and saving CLIP / CLIP-ViP weights.

Accepted sources (the architecture always comes from the checkpoint):
- a local Hugging Face CLIP directory: `config.json` + `model.safetensors` or `pytorch_model.bin`
  (`torch.load(weights_only=True)`); a directory written by `save_pretrained` also restores our
  "clipvip" config entry;
- an OpenAI CLIP `.pt`: either a plain state dict (`torch.load(weights_only=True)`) or the released
  TorchScript archive, read by `trainer.model.torchscript` without executing it; names are converted;
- an official CLIP-ViP checkpoint (`pretrain_clipvip_base_{32,16}.pt`): a flat state dict with the
  `clipmodel.` prefix (or a `restore.pt` holding it under `model_state_dict`);
- a `.safetensors` file or `.pt` state dict with plain HF names.

Starting from plain CLIP, `logit_scale` is overwritten with 4.60 (as VidCLIP does) and the new CLIP-ViP
parameters (proxies, temporal table, video head) keep their init; a CLIP-ViP checkpoint keeps its scale.
Every load records a `LoadReport` (missing / unexpected / shape-mismatched keys) on `model.load_report`;
with `strict=True` (default) unexpected gaps raise.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.atomic import atomic_output, write_text_atomic
from trainer.model.clipvip import CLIPViP
from trainer.model.config import VIDEO_HEADS, ClipViPConfig, TextConfig, VisionConfig
from trainer.model.torchscript import is_torchscript_archive, read_torchscript_tensors
from trainer.model.vision import resize_temporal

log = logging.getLogger(__name__)

CLIPVIP_PREFIX = "clipmodel."
# Keys some checkpoints carry that are not parameters (HF position_ids buffers, OpenAI JIT metadata).
_IGNORED_KEY = re.compile(r"(^|\.)position_ids$|^(input_resolution|context_length|vocab_size)$|\.attn_mask$")
# Parameters CLIP-ViP adds to CLIP: absent from a plain CLIP checkpoint by design.
_VIP_NEW_KEY = re.compile(r"^vision_model\.embeddings\.(added_cls|temporal_embedding)$|^video_head\.")


@dataclass
class LoadReport:
    source: str  # "hf" | "openai" | "clipvip" | "clipvip-saved" | "state-dict"
    path: str
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks (kept at init)
    expected_missing: list[str] = field(default_factory=list)  # new CLIP-ViP params when starting from CLIP
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model has no place for
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint shape vs model shape"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        lines = [f"loaded {self.source} checkpoint {self.path}"]
        for title, items in (
            ("missing (kept at init)", self.missing),
            ("new CLIP-ViP parameters (init)", self.expected_missing),
            ("unexpected (ignored)", self.unexpected),
            ("shape mismatch (kept at init)", self.mismatched),
            ("notes", self.notes),
        ):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items)} total)" if len(items) > 20 else "")
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


# ---- OpenAI <-> HF names ------------------------------------------------------------------------
_OPENAI_BLOCK = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_OPENAI_TOP = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_OPENAI_PROJ = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_OPENAI_BLOCK_RE = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def is_openai_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    return "visual.conv1.weight" in sd or "visual.class_embedding" in sd


def openai_to_hf(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert OpenAI CLIP names to HF names. Returns (converted, unconverted keys)."""
    out: dict[str, torch.Tensor] = {}
    rest: list[str] = []
    for key, value in sd.items():
        if key in _OPENAI_TOP:
            out[_OPENAI_TOP[key]] = value
        elif key in _OPENAI_PROJ:
            out[_OPENAI_PROJ[key]] = value.t().contiguous()  # OpenAI computes x @ proj
        elif m := _OPENAI_BLOCK_RE.match(key):
            tower = "vision_model" if m.group(1) else "text_model"
            base = f"{tower}.encoder.layers.{m.group(2)}."
            name = m.group(3)
            if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = name.rsplit("_", 1)[1]
                for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{base}self_attn.{proj}.{kind}"] = chunk.contiguous()
            elif name in _OPENAI_BLOCK:
                out[base + _OPENAI_BLOCK[name]] = value
            else:
                rest.append(key)
        else:
            rest.append(key)
    return out, rest


def hf_to_openai(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `openai_to_hf` for the CLIP part (used by tests and for exporting)."""
    top = {v: k for k, v in _OPENAI_TOP.items()}
    proj = {v: k for k, v in _OPENAI_PROJ.items()}
    block = {v: k for k, v in _OPENAI_BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    block_re = re.compile(r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)$")
    for key, value in sd.items():
        if key in top:
            out[top[key]] = value
        elif key in proj:
            out[proj[key]] = value.t().contiguous()
        elif m := block_re.match(key):
            base = (
                "visual." if m.group(1) == "vision_model" else ""
            ) + f"transformer.resblocks.{m.group(2)}."
            name = m.group(3)
            if name in block:
                out[base + block[name]] = value
            elif pm := re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", name):
                qkv.setdefault((base, pm.group(2)), {})[pm.group(1)] = value
    for (base, kind), parts in qkv.items():
        out[f"{base}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


# ---- architecture from shapes / HF config ----------------------------------------------------
def _count_layers(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> ClipViPConfig:
    """Architecture of an HF-named state dict. Head counts are not in the shapes: CLIP uses width // 64."""
    try:
        cls = sd["vision_model.embeddings.class_embedding"]
        patch_w = sd["vision_model.embeddings.patch_embedding.weight"]
        vpos = sd["vision_model.embeddings.position_embedding.weight"]
        tok = sd["text_model.embeddings.token_embedding.weight"]
        tpos = sd["text_model.embeddings.position_embedding.weight"]
        vproj = sd["visual_projection.weight"]
    except KeyError as e:
        raise ValueError(f"checkpoint lacks {e.args[0]}: cannot infer the CLIP architecture") from e
    grid = math.isqrt(vpos.shape[0] - 1)
    if grid * grid != vpos.shape[0] - 1:
        raise ValueError(f"vision position table of {vpos.shape[0]} rows is not 1 + a square grid")
    vw, tw = cls.shape[0], tok.shape[1]
    vision = VisionConfig(
        width=vw,
        layers=_count_layers(sd, "vision_model.encoder.layers."),
        heads=max(1, vw // 64),
        patch=patch_w.shape[-1],
        image_size=grid * patch_w.shape[-1],
        intermediate_size=sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
    )
    vocab = tok.shape[0]
    text = TextConfig(
        vocab=vocab,
        width=tw,
        layers=_count_layers(sd, "text_model.encoder.layers."),
        heads=max(1, tw // 64),
        context_length=tpos.shape[0],
        intermediate_size=sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
    cfg = ClipViPConfig(vision=vision, text=text, projection_dim=vproj.shape[0])
    if "vision_model.embeddings.added_cls" in sd:
        cfg.num_proxies = sd["vision_model.embeddings.added_cls"].shape[0]
    if "vision_model.embeddings.temporal_embedding" in sd:
        cfg.num_frames = sd["vision_model.embeddings.temporal_embedding"].shape[1]
    return cfg


# Our tower field -> HF `CLIPConfig` key, one table per tower serving both directions (in the order
# HF writes them).
_HF_VISION_KEYS = {
    "width": "hidden_size",
    "intermediate_size": "intermediate_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "image_size": "image_size",
    "patch": "patch_size",
    "hidden_act": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
    "attention_dropout": "attention_dropout",
}
_HF_TEXT_KEYS = {
    "vocab": "vocab_size",
    "width": "hidden_size",
    "intermediate_size": "intermediate_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "context_length": "max_position_embeddings",
    "hidden_act": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
    "attention_dropout": "attention_dropout",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id",
}


def config_from_hf(hf: dict[str, Any]) -> ClipViPConfig:
    """Our config from a HF `CLIPConfig` dict (missing keys take HF's CLIP defaults, which are ours)."""
    v = hf.get("vision_config") or hf.get("vision_config_dict") or {}
    t = hf.get("text_config") or hf.get("text_config_dict") or {}
    vision = VisionConfig(**{ours: v[key] for ours, key in _HF_VISION_KEYS.items() if key in v})
    text = TextConfig(**{ours: t[key] for ours, key in _HF_TEXT_KEYS.items() if key in t})
    return ClipViPConfig(vision=vision, text=text, projection_dim=hf.get("projection_dim", 512))


def hf_config_dict(cfg: ClipViPConfig) -> dict[str, Any]:
    """HF `CLIPConfig`-compatible dict plus our full config under "clipvip"."""
    v, t = cfg.vision, cfg.text
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": cfg.projection_dim,
        "logit_scale_init_value": cfg.logit_scale_init,
        "text_config": {
            "model_type": "clip_text_model",
            **{key: getattr(t, ours) for ours, key in _HF_TEXT_KEYS.items()},
            "projection_dim": cfg.projection_dim,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "num_channels": 3,
            **{key: getattr(v, ours) for ours, key in _HF_VISION_KEYS.items()},
            "projection_dim": cfg.projection_dim,
        },
        "clipvip": cfg.to_dict(),
    }


# ---- reading checkpoints ---------------------------------------------------------------------
def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        raise ValueError(
            f"{path}: refusing to unpickle (weights_only=True failed: {e}). Only tensor state dicts are accepted."
        ) from e


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[str, dict[str, torch.Tensor], ClipViPConfig | None, list[str]]:
    """(source kind, HF-named state dict, config if the checkpoint states one, unconverted keys)."""
    path = Path(path)
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face CLIP directory)")
        hf = json.loads(cfg_path.read_text())
        if (path / "model.safetensors").is_file():
            sd = load_file(path / "model.safetensors", device=str(map_location))
        elif (path / "pytorch_model.bin").is_file():
            sd = _unwrap_state_dict(_torch_load(path / "pytorch_model.bin", map_location), path)
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
        if "clipvip" in hf:
            return "clipvip-saved", sd, ClipViPConfig.from_dict(hf["clipvip"]), []
        if hf.get("model_type", "clip") != "clip":
            raise ValueError(f"{path}: model_type {hf.get('model_type')!r} is not a CLIP model")
        return "hf", sd, config_from_hf(hf), []
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        sd = load_file(path, device=str(map_location))
    elif is_torchscript_archive(path):
        sd = read_torchscript_tensors(path)
    else:
        sd = _unwrap_state_dict(_torch_load(path, map_location), path)
    if is_openai_state_dict(sd):
        converted, rest = openai_to_hf(sd)
        return "openai", converted, None, rest
    if any(k.startswith(CLIPVIP_PREFIX) for k in sd):
        stripped = {k[len(CLIPVIP_PREFIX) :]: v for k, v in sd.items() if k.startswith(CLIPVIP_PREFIX)}
        rest = [k for k in sd if not k.startswith(CLIPVIP_PREFIX)]
        return "clipvip", stripped, None, rest
    return "state-dict", sd, None, []


# ---- public API ------------------------------------------------------------------------------
def from_pretrained(
    path: str | Path,
    num_proxies: int | None = None,
    num_frames: int | None = None,
    video_head: str | None = None,
    **kwargs: Any,
) -> CLIPViP:
    """Load a local HF CLIP dir, an OpenAI CLIP `.pt`, a CLIP-ViP checkpoint, or a dir we saved.

    None means "from the checkpoint, else the default" (3 proxies, 12 frames, "vip"). See
    `load_pretrained` for the keyword options (strict, map_location, ...).
    """
    return load_pretrained(
        path, num_proxies=num_proxies, num_frames=num_frames, video_head=video_head, **kwargs
    )


def _architecture(
    source: str,
    sd: dict[str, torch.Tensor],
    ckpt_cfg: ClipViPConfig | None,
    config: ClipViPConfig | None,
    overrides: dict[str, Any],
) -> ClipViPConfig:
    """The checkpoint's architecture (stated, else inferred from shapes), with the caller's overrides
    (None values keep the checkpoint's)."""
    if config is not None:
        base = config
    elif ckpt_cfg is not None:
        base = ckpt_cfg
        if source == "hf" and _is_vip(sd):  # an HF dir holding CLIP-ViP weights: proxies/frames from shapes
            shaped = config_from_state_dict(sd)
            base = replace(base, num_proxies=shaped.num_proxies, num_frames=shaped.num_frames)
    else:
        base = config_from_state_dict(sd)  # proxies/frames from shapes, else the defaults (3, 12)
    video_head = overrides.get("video_head")
    if video_head is not None and video_head not in VIDEO_HEADS:
        raise ValueError(f"video_head must be one of {VIDEO_HEADS}, got {video_head!r}")
    if overrides.get("clip2video") is not None:
        overrides = {**overrides, "clip2video": dict(overrides["clip2video"])}
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _is_vip(sd: dict[str, torch.Tensor]) -> bool:
    return "vision_model.embeddings.added_cls" in sd or "vision_model.embeddings.temporal_embedding" in sd


def _match_keys(model: CLIPViP, sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """The entries of ``sd`` that fit ``model`` (temporal table resized); every gap goes to ``report``."""
    temporal_key = "vision_model.embeddings.temporal_embedding"
    own = model.state_dict()
    if temporal_key in sd and temporal_key in own and sd[temporal_key].shape[1] != own[temporal_key].shape[1]:
        old = sd[temporal_key].shape[1]
        sd = {**sd, temporal_key: resize_temporal(sd[temporal_key].float(), own[temporal_key].shape[1])}
        report.notes.append(f"temporal table resized {old} -> {model.config.num_frames} (linear)")
    loadable: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key not in own:
            if _VIP_NEW_KEY.search(key):  # e.g. proxies of a CLIP-ViP checkpoint loaded for a per-frame head
                report.notes.append(f"{key} not used by video_head={model.config.video_head!r}")
            else:
                report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            loadable[key] = value
    for key in own:
        if key not in sd:
            (report.expected_missing if _VIP_NEW_KEY.search(key) else report.missing).append(key)
    return loadable


def _init_new_parts(
    model: CLIPViP, from_plain_clip: bool, seqtransf_from_text: bool, report: LoadReport
) -> None:
    """What VidCLIP / CLIP4Clip do to parameters a plain CLIP checkpoint does not have."""
    cfg = model.config
    if from_plain_clip:  # VidCLIP resets the scale
        with torch.no_grad():
            model.logit_scale.fill_(cfg.logit_scale_init)
        report.notes.append(f"logit_scale set to {cfg.logit_scale_init} (VidCLIP)")
    # Only a head absent from the checkpoint starts from the text tower (a TDB-only CLIP2Video checkpoint
    # loaded with tab on keeps its trained TDB; only the new TAB parts keep their init).
    head_missing = "video_head.frame_position_embeddings.weight" in report.expected_missing
    if cfg.video_head in ("seqtransf", "clip2video") and head_missing and seqtransf_from_text:
        if model.video_head.init_from_text(model.text_model):  # type: ignore[union-attr,operator]
            report.notes.append(f"{cfg.video_head} head initialised from the text transformer")


def load_pretrained(
    path: str | Path,
    num_proxies: int | None = None,
    num_frames: int | None = None,
    video_head: str | None = None,
    *,
    config: ClipViPConfig | None = None,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    seqtransf_from_text: bool = True,
    clip2video: dict[str, Any] | None = None,
) -> CLIPViP:
    """Build a CLIPViP with the checkpoint's architecture and load its weights.

    `num_proxies` / `num_frames` / `video_head`: None keeps the checkpoint's value (else 3 / 12 / "vip").
    A temporal table of another length is linearly resized. `config` replaces the inferred
    architecture (needed only for raw state dicts whose head counts are not width // 64).
    `strict`: raise on missing, unexpected or shape-mismatched keys (new CLIP-ViP parameters excepted).
    `clip2video`: CLIP2VideoHead kwargs (None keeps the checkpoint's). `seqtransf_from_text`: a new seqTransf
    or CLIP2Video head starts from CLIP's text transformer (CLIP4Clip / CLIP2Video), where shapes match.
    """
    source, sd, ckpt_cfg, rest = read_checkpoint(path, map_location)
    sd = {k: v for k, v in sd.items() if not _IGNORED_KEY.search(k)}
    rest = [k for k in rest if not _IGNORED_KEY.search(k)]
    overrides = {"num_proxies": num_proxies, "num_frames": num_frames, "video_head": video_head,
                 "clip2video": clip2video}  # fmt: skip
    model = CLIPViP(_architecture(source, sd, ckpt_cfg, config, overrides))
    report = LoadReport(source=source, path=str(path), unexpected=list(rest))
    model.load_state_dict(_match_keys(model, sd, report), strict=False)
    _init_new_parts(model, not (source == "clipvip-saved" or _is_vip(sd)), seqtransf_from_text, report)

    model.load_report = report  # type: ignore[assignment]
    if report.ok:
        log.info(report.summary())
    else:
        log.warning(report.summary())
        if strict:
            raise ValueError(report.summary() + "\n(pass strict=False to load anyway)")
    return model


def save_pretrained(model: CLIPViP, out_dir: str | Path) -> Path:
    """config.json (readable by transformers' CLIPConfig/CLIPModel) + model.safetensors, written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_output(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text_atomic(out / "config.json", json.dumps(hf_config_dict(model.config), indent=2) + "\n")
    return out
