"""Text-video retrieval metrics (R@K, MdR, MnR) and dual-softmax (DSL) post-processing.

Conventions (CLIPVIP.md §6):
- ``sim`` is ``[n_queries, n_candidates]``; rows are queries, the ground truth of query ``i`` is column ``i``.
  Text->video uses ``sim`` = texts x videos, video->text uses ``sim.T``.
- A rank is 0-based; ``R@K = 100 * mean(rank < K)``; ``MdR = median(rank) + 1``; ``MnR = mean(rank) + 1``
  (1-based, as CLIP4Clip / CLIP2Video report them; ``median`` averages the two middle values for even counts,
  like ``np.median``).

Tie handling (deterministic, pessimistic): the rank of the ground truth is the number of *other* candidates
whose score is ``>=`` the ground-truth score. Every tie is counted against the query, so a model that outputs
a constant similarity gets R@1 = 0 (the official ``compute_metrics`` instead lets tied entries create extra
matches, which is where fractional percentages such as 49.1071 come from). The result does not depend on the
order of the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

METRIC_KEYS = ("R1", "R5", "R10", "MdR", "MnR")


def _as_tensor(sim: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(sim).detach().to("cpu", torch.float64)
    if x.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("similarity matrix has no queries")
    if torch.isnan(x).any():
        raise ValueError("similarity matrix contains NaN")
    return x


def metrics_from_ranks(ranks: torch.Tensor | np.ndarray) -> dict[str, float]:
    """R@1/5/10 (percent), MdR and MnR from 0-based ranks of the ground truth."""
    r = torch.as_tensor(ranks).to(torch.float64).flatten()
    if r.numel() == 0:
        raise ValueError("no ranks")
    return {
        "R1": float((r < 1).double().mean() * 100.0),
        "R5": float((r < 5).double().mean() * 100.0),
        "R10": float((r < 10).double().mean() * 100.0),
        "MdR": float(np.median(r.numpy()) + 1.0),
        "MnR": float(r.mean() + 1.0),
    }


def ground_truth_ranks(sim: torch.Tensor | np.ndarray, targets: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of ``sim[i, targets[i]]`` in row ``i`` (ties count against the query)."""
    x = _as_tensor(sim)
    t = torch.as_tensor(targets, dtype=torch.long).flatten()
    if t.numel() != x.shape[0]:
        raise ValueError(f"{t.numel()} targets for {x.shape[0]} queries")
    if t.numel() and (t.min() < 0 or t.max() >= x.shape[1]):
        raise ValueError("target column out of range")
    gt = x.gather(1, t[:, None])
    # ">=" counts the ground truth itself once; subtract it so only *other* candidates are counted.
    return (x >= gt).sum(dim=1) - 1


def retrieval_metrics(sim: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Metrics of a query x candidate similarity matrix whose ground truth is the diagonal.

    ``sim`` may have more columns than rows (extra distractor candidates); query ``i`` matches column ``i``.
    Returns ``{"R1","R5","R10","MdR","MnR"}`` with R@K in percent.
    """
    x = _as_tensor(sim)
    if x.shape[1] < x.shape[0]:
        raise ValueError(f"need at least as many candidates as queries, got shape {tuple(x.shape)}")
    return metrics_from_ranks(ground_truth_ranks(x, torch.arange(x.shape[0])))


def dsl(sim: torch.Tensor | np.ndarray, temperature: float = 100.0) -> torch.Tensor:
    """Dual-softmax inference: ``sim * softmax(temperature * sim)`` over the text axis (dim 0).

    ``sim`` is texts x videos, so each video column is normalised over all text queries (transductive:
    it uses the whole query set). The temperature is fixed at 100, not the learned logit scale.
    """
    x = torch.as_tensor(sim)
    if x.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D, got shape {tuple(x.shape)}")
    return x * torch.softmax(x * temperature, dim=0)


def multi_caption_metrics(
    sim: torch.Tensor | np.ndarray, text_to_video: Sequence[int] | torch.Tensor
) -> dict[str, dict[str, float]]:
    """Several captions per video (MSVD / MSR-VTT-full style, CLIP4Clip semantics).

    ``sim`` is ``[n_texts, n_videos]`` and ``text_to_video[i]`` is the video of caption ``i``.
    - text->video: every caption is a query ranking all videos; metrics average over all captions.
    - video->text: each video ranks the *videos' caption groups*, a group scoring the max over its captions
      (CLIP4Clip ``tensor_video_to_text_sim``); this is lenient compared to ranking single captions.
    Ties are pessimistic in both directions. With exactly one caption per video, in video order, this equals
    ``retrieval_metrics(sim)`` / ``retrieval_metrics(sim.T)``.
    """
    x = _as_tensor(sim)
    owner = torch.as_tensor(text_to_video, dtype=torch.long).flatten()
    n_videos = x.shape[1]
    if owner.numel() != x.shape[0]:
        raise ValueError(f"{owner.numel()} caption owners for {x.shape[0]} captions")
    if owner.min() < 0 or owner.max() >= n_videos:
        raise ValueError("caption owner out of range")
    counts = torch.bincount(owner, minlength=n_videos)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} videos have no caption")
    t2v = metrics_from_ranks(ground_truth_ranks(x, owner))
    # group[g, v] = max over captions c of video g of sim[c, v]
    group = torch.full((n_videos, n_videos), -torch.inf, dtype=x.dtype)
    group = group.scatter_reduce(0, owner[:, None].expand(-1, n_videos), x, reduce="amax")
    v2t = metrics_from_ranks(ground_truth_ranks(group.T, torch.arange(n_videos)))
    return {"t2v": t2v, "v2t": v2t}
