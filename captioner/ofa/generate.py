"""fairseq-exact beam search (SequenceGenerator + BeamSearch with OFA's caption settings), batched over images.

Semantics (OFA.md section 7, checked against the golden fixtures):
- the decoder starts from BOS; steps 0..max_len; at step max_len only EOS is allowed; PAD is never allowed;
  EOS is banned while step < min_len; nothing else is masked (mask, code and bin tokens stay selectable);
- each step keeps the top 2*beam candidates over beam x vocab cumulative log-probs; an EOS candidate is
  finalized only when it ranks within the top `beam`, with score cum_logprob / (step+1)**lenpen;
- a sample is done when `beam` hypotheses are finalized; its hypotheses are returned best first;
- no-repeat n-gram blocking looks at tokens[0:step+1] including the leading BOS (pip fairseq's CPU fallback
  gets this wrong; OFA's bundled version and the CUDA kernel do it right).
Finished samples leave the batch (as in fairseq) so the remaining ones run on smaller tensors.
"""

from __future__ import annotations

import dataclasses

import torch

from captioner.ofa.interface import BOS, EOS, PAD, EncoderOut, Seq2Seq


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """OFA caption inference settings (run_scripts/caption/evaluate_caption.sh)."""

    beam: int = 5
    max_len: int = 16
    min_len: int = 1
    no_repeat_ngram: int = 3
    lenpen: float = 1.0
    use_cache: bool = True

    def __post_init__(self) -> None:
        # At construction, so a bad setting fails before a large checkpoint is loaded.
        if self.beam < 1 or self.max_len < 1 or self.min_len < 0 or self.no_repeat_ngram < 0:
            raise ValueError(f"invalid generation settings {self}")


@dataclasses.dataclass
class Hypothesis:
    tokens: torch.Tensor  # [T] long, without the leading BOS, ending with EOS
    score: float  # sum(positional_scores) / len(tokens) ** lenpen
    positional_scores: torch.Tensor  # [T] float32


def ban_repeated_ngrams(lprobs: torch.Tensor, tokens: torch.Tensor, step: int, n: int) -> None:
    """In place: -inf for every w such that (last n-1 tokens, w) already occurs in tokens[:, :step+1]."""
    if n <= 0 or step + 2 - n <= 0:
        return
    hist = tokens[:, : step + 1]
    if n == 1:  # every token seen so far is a repeated unigram
        lprobs.scatter_(1, hist, float("-inf"))
        return
    windows = hist.unfold(1, n, 1)  # [N, step+2-n, n]
    key = hist[:, step + 2 - n :]  # last n-1 tokens
    match = (windows[:, :, : n - 1] == key[:, None, :]).all(-1)
    # No early exit on "no match": that test would cost a device->host sync every step.
    penalty = torch.zeros(match.shape, dtype=lprobs.dtype, device=lprobs.device).masked_fill(
        match, float("-inf")
    )
    lprobs.scatter_add_(1, windows[:, :, n - 1], penalty)


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src_tokens: torch.Tensor,
    patch_images: torch.Tensor,
    patch_masks: torch.Tensor | None = None,
    cfg: GenerationConfig = GenerationConfig(),
) -> list[list[Hypothesis]]:
    """Per sample, `cfg.beam` finalized hypotheses, best first."""
    return beam_search_encoded(model, model.encode(src_tokens, patch_images, patch_masks), cfg)


@torch.no_grad()
def beam_search_encoded(
    model: Seq2Seq, enc: EncoderOut, cfg: GenerationConfig = GenerationConfig()
) -> list[list[Hypothesis]]:
    """Beam search from an encoder output (the decoder half of `beam_search`).

    Longer than our usual function on purpose: one step of this loop is one step of fairseq's
    SequenceGenerator in the same order (mask, top-2k, finalize EOS, pick the next beams, reorder the
    cache), which is what the golden parity tests compare; split up, that correspondence is lost.
    """
    beam = cfg.beam
    dev = enc.x.device
    bsz = enc.x.shape[0]
    state = model.decoder.init_state(enc, group=beam, max_len=cfg.max_len + 1, use_cache=cfg.use_cache)
    vocab = model.cfg.vocab_size
    cand = 2 * beam

    tokens = torch.full((bsz * beam, cfg.max_len + 2), PAD, dtype=torch.long, device=dev)
    tokens[:, 0] = BOS
    scores = torch.zeros(bsz * beam, cfg.max_len + 1, device=dev)
    finalized: list[list[Hypothesis]] = [[] for _ in range(bsz)]
    alive = list(range(bsz))  # original index of each sample still in the batch
    ignore = torch.zeros(bsz, beam, dtype=torch.bool, device=dev)  # beams already finalized via EOS

    for step in range(cfg.max_len + 1):
        n_alive = len(alive)
        lp = model.decode_step(tokens, state, step)
        lp.masked_fill_(lp.isnan(), float("-inf"))
        lp[:, PAD] = float("-inf")
        if step >= cfg.max_len:
            eos_lp = lp[:, EOS].clone()
            lp.fill_(float("-inf"))
            lp[:, EOS] = eos_lp
        elif step < cfg.min_len:
            lp[:, EOS] = float("-inf")
        ban_repeated_ngrams(lp, tokens, step, cfg.no_repeat_ngram)

        lp = lp.view(n_alive, beam, vocab)
        # At step 0 all beams are identical, so only the first one competes.
        lp = lp[:, :1] if step == 0 else lp + scores.view(n_alive, beam, -1)[:, :, step - 1 : step]
        flat = lp.reshape(n_alive, -1)
        cand_scores, cand_idx = torch.topk(flat, k=min(cand, flat.shape[1] - 1))
        cand_beams = torch.div(cand_idx, vocab, rounding_mode="floor")
        cand_tokens = cand_idx % vocab
        cand_rows = cand_beams + (torch.arange(n_alive, device=dev) * beam)[:, None]

        eos = cand_tokens.eq(EOS) & cand_scores.ne(float("-inf"))
        eos[:, :beam] &= ~ignore
        # Finalize EOS candidates ranked within the top `beam` (one host sync per step).
        eos_top = eos[:, :beam]
        done_now: list[int] = []
        if bool(eos_top.any()):
            where = eos_top.nonzero().tolist()
            rows = cand_rows[:, :beam][eos_top]
            eos_scores = cand_scores[:, :beam][eos_top]
            prefix = tokens.index_select(0, rows)[:, 1 : step + 1].cpu()
            cum = scores.index_select(0, rows)[:, :step].float().cpu()
            eos_scores_cpu = eos_scores.float().cpu()
            for j, (s, _) in enumerate(where):
                owner = alive[s]
                if len(finalized[owner]) >= beam:
                    continue
                toks = torch.cat([prefix[j], torch.tensor([EOS])])
                cums = torch.cat([cum[j], eos_scores_cpu[j : j + 1]])
                pos = torch.cat([cums[:1], cums[1:] - cums[:-1]])
                score = float(eos_scores_cpu[j]) / (step + 1) ** cfg.lenpen
                finalized[owner].append(Hypothesis(toks, score, pos))
        for s in range(n_alive):
            if len(finalized[alive[s]]) >= beam or step == cfg.max_len:
                done_now.append(s)
        if len(done_now) == n_alive:
            break

        # Next beams: the first `beam` candidates that are not (already finalized) EOS.
        eos[:, :beam] |= ignore
        active = eos.long() * cand + torch.arange(eos.shape[1], device=dev)[None]
        new_ignore, pick = torch.topk(active, k=beam, dim=1, largest=False)
        ignore = new_ignore.ge(cand)[:, :beam]
        rows = torch.gather(cand_rows, 1, pick).view(-1)
        next_tokens = torch.gather(cand_tokens, 1, pick).view(-1)
        next_scores = torch.gather(cand_scores, 1, pick).view(-1)

        if done_now:  # batch reduction: drop finished samples before the next step
            finished = set(done_now)
            keep = [s for s in range(n_alive) if s not in finished]
            keep_t = torch.tensor(keep, device=dev)
            keep_rows = (keep_t[:, None] * beam + torch.arange(beam, device=dev)).flatten()
            rows = rows.view(n_alive, beam)[keep_t].flatten()
            next_tokens = next_tokens.view(n_alive, beam)[keep_t].flatten()
            next_scores = next_scores.view(n_alive, beam)[keep_t].flatten()
            ignore = ignore[keep_t]
            alive = [alive[s] for s in keep]
            # rows index the old batch; select images first, then renumber rows into the reduced batch
            state.select_images(keep_t)
            old_to_new = torch.full((n_alive * beam,), -1, dtype=torch.long, device=dev)
            old_to_new[keep_rows] = torch.arange(keep_rows.numel(), device=dev)
            tokens, scores = tokens[keep_rows], scores[keep_rows]
            rows = old_to_new[rows]

        tokens[:, : step + 1] = tokens.index_select(0, rows)[:, : step + 1]
        tokens[:, step + 1] = next_tokens
        if step > 0:
            scores[:, :step] = scores.index_select(0, rows)[:, :step]
        scores[:, step] = next_scores
        state.reorder(rows)

    return [sorted(f, key=lambda h: -h.score) for f in finalized]
