"""CLIP-ViP contrastive losses (CLIPVIP.md §3), as SUMS of cross-entropy terms.

Notation: ``v`` video, ``s`` subtitle, ``c`` auxiliary caption of the middle frame, ``f`` middle-frame image.
All features are L2-normalised and already gathered over ranks (``trainer.loop.distributed.gather_features``);
``logit_scale`` is the learnable log-temperature, ``scale = exp(logit_scale)``.

Loss names (the official class in brackets):

=============  ==========================================  ==========================================
name           paper                                       official class
=============  ==========================================  ==========================================
``vs``         L_V<->S (all fine-tuning configs)           ``NCELearnableTempLoss``
``vs_fc``      (a) L_V<->S + L_F<->C                       ``VidImgDivideNCELearnableTempLoss``
``vs_vc``      (b) L_V<->S + L_V<->C                       ``NCELearnableTempLoss_vs_vc``
``vs_vc_fc``   (c) L_V<->S + L_V<->C + L_F<->C             ``NCELearnableTempLoss_vs_vc_fc``
``vsc``        L_V<->S,C                                   ``NCELearnableTempLoss_vsc``
``vsc_fc``     (d) L_V<->S,C + L_F<->C (final method)      ``NCELearnableTempLoss_vsc_fc``
=============  ==========================================  ==========================================

Each CE term is a mean over its query rows; terms are added with no division (as the official code).

Missing captions (``c_valid[i] == False``): a missing caption is treated as if it did not exist. Its column
is removed from every logit matrix (it is nobody's negative), its row is not a query, and the video/frame
whose positive it would have been asks no caption query. Subtitle queries and negatives are unaffected.
With every caption present this reduces exactly to the official formulas.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainer.config import check_loss_name, needs_caption, needs_frame
from trainer.model.config import VIDCLIP_LOGIT_SCALE

LOGIT_SCALE_INIT = VIDCLIP_LOGIT_SCALE  # VidCLIP overwrites CLIP's logit_scale with 4.60 (~ln 100)
LOGIT_SCALE_MAX = math.log(200.0)  # clamp_(0, ln 200): scale <= 200


@torch.no_grad()
def clamp_logit_scale(logit_scale: torch.Tensor) -> None:
    """Clamp the log-temperature in place to [0, ln 200] (the official ``clamp_(0, 4.6052)``)."""
    logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)


def _ce_rows(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """Mean CE over the selected query rows; an empty selection gives a zero that keeps the graph."""
    if rows is not None:
        logits, labels = logits[rows], labels[rows]
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if logits.dtype in (torch.float16, torch.bfloat16):  # CE in fp32 under autocast
        logits = logits.float()
    return F.cross_entropy(logits, labels)


def _mask_columns(logits: torch.Tensor, col_valid: torch.Tensor | None) -> torch.Tensor:
    if col_valid is None:
        return logits
    return logits.masked_fill(~col_valid[None, :], float("-inf"))


def symmetric_nce(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, b_valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(a->b), CE(b->a)) on ``scale * a b^T`` with the diagonal as ground truth.

    ``b_valid`` marks which ``b`` exist (captions); ``a`` (videos, frames) always exist.
    """
    logits = scale * a @ b.t()
    labels = torch.arange(a.shape[0], device=a.device)
    a2b = _ce_rows(_mask_columns(logits, b_valid), labels, b_valid)
    b2a = _ce_rows(logits.t(), labels, b_valid)
    return a2b, b2a


def joint_vsc(
    v: torch.Tensor,
    s: torch.Tensor,
    c: torch.Tensor,
    scale: torch.Tensor,
    c_valid: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """L_V<->S,C: text->video CE for subtitles and captions, and video->text with a joint negative pool.

    For video i, two rows with label 0: ``[S_vs[i,i], S_vs[i,j!=i], S_vc[i,j!=i]]`` and
    ``[S_vc[i,i], S_vs[i,j!=i], S_vc[i,j!=i]]`` (the video's other positive is not a negative).
    """
    if s.shape[0] != c.shape[0]:
        raise ValueError(f"subtitle and caption batches differ: {s.shape[0]} vs {c.shape[0]}")
    n = v.shape[0]
    s_vs = scale * v @ s.t()
    s_vc = scale * v @ c.t()
    labels = torch.arange(n, device=v.device)
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    neg_vs = s_vs.masked_fill(eye, float("-inf"))
    neg_vc = _mask_columns(s_vc.masked_fill(eye, float("-inf")), c_valid)
    negatives = torch.cat([neg_vs, neg_vc], dim=1)  # [n, 2n]; -inf entries contribute exp(-inf) = 0
    zeros = torch.zeros(n, dtype=torch.long, device=v.device)
    row_s = torch.cat([s_vs.diagonal()[:, None], negatives], dim=1)
    row_c = torch.cat([s_vc.diagonal()[:, None], negatives], dim=1)
    return {
        "t2v": _ce_rows(s_vs.t(), labels, None),
        "c2v": _ce_rows(s_vc.t(), labels, c_valid),
        "v2t_joint": _ce_rows(row_s, zeros, None),
        "v2c_joint": _ce_rows(row_c, zeros, c_valid),
    }


def contrastive_loss(
    name: str,
    v: torch.Tensor,
    s: torch.Tensor,
    c: torch.Tensor | None = None,
    f: torch.Tensor | None = None,
    logit_scale: torch.Tensor | None = None,
    c_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss ``name`` (see module doc) -> (total, per-term dict). Total is the SUM of the CE terms.

    ``logit_scale`` is the log-temperature (required). ``c_valid`` is a bool mask over the (gathered) batch.
    """
    check_loss_name(name)
    if logit_scale is None:
        raise ValueError("logit_scale is required")
    if needs_caption(name) and c is None:
        raise ValueError(f"loss {name!r} needs caption features")
    if needs_frame(name) and f is None:
        raise ValueError(f"loss {name!r} needs frame features")
    if c_valid is not None:
        c_valid = c_valid.to(device=v.device, dtype=torch.bool)
    scale = logit_scale.exp()
    terms: dict[str, torch.Tensor] = {}
    if name in ("vsc", "vsc_fc"):
        assert c is not None
        terms.update(joint_vsc(v, s, c, scale, c_valid))
    else:
        terms["v2t"], terms["t2v"] = symmetric_nce(v, s, scale)
        if name in ("vs_vc", "vs_vc_fc"):
            assert c is not None
            terms["v2c"], terms["c2v"] = symmetric_nce(v, c, scale, c_valid)
    if needs_frame(name):
        assert c is not None and f is not None
        terms["f2c"], terms["c2f"] = symmetric_nce(f, c, scale, c_valid)
    total = torch.stack(list(terms.values())).sum()
    return total, terms
