"""OFA encoder-decoder for captioning, in plain PyTorch with the official fairseq parameter names.

Module and parameter names follow the OFA checkpoint keys, so an official state dict loads without renaming
(`OFA.state_dict()` has exactly the keys, shapes and dtypes of the official model, buffers included).
Attention runs through `scaled_dot_product_attention` with the OFA biases as an additive mask. The decoder
supports an incremental self-attention KV cache and shares one set of cross-attention keys/values among the
beams of an image (the beams of one image attend to the same encoder output, so their queries are stacked).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from captioner.ofa.checkpoint import checkpoint_args, load_official_state_dict, read_checkpoint
from captioner.ofa.config import OFAConfig, config_from_checkpoint
from captioner.ofa.generate import GenerationConfig, beam_search
from captioner.ofa.interface import BOS, EOS, PAD, UNK, EncoderOut
from captioner.ofa.positions import (
    decoder_image_position_idx,
    image_buckets,
    image_position_ids,
    token_buckets,
)

STATE_DICT_VERSION = 3.0  # value of the official encoder.version / decoder.version buffers


# ---------------------------------------------------------------- image backbone: ResNet stem + 3 stages
class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), torchvision parameter names."""

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """OFA's image embedder: stem and layer1..layer3 only; output 1024 channels at stride 16."""

    def __init__(self, blocks: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256), blocks)):
            mods = [Bottleneck(cin, planes, 1 if i == 0 else 2, downsample=True)]
            mods += [Bottleneck(planes * 4, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*mods))
            cin = planes * 4
        self.layer1, self.layer2, self.layer3 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer3(self.layer2(self.layer1(x)))


# ---------------------------------------------------------------- attention and layers
class Attention(nn.Module):
    """OFA multi-head attention: q scaled by (head_dim * attn_scale_factor)^-0.5, per-head gain `c_attn`."""

    def __init__(self, dim: int, heads: int, scale_factor: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        # Registration order reproduces the official state_dict order.
        self.c_attn = nn.Parameter(torch.ones(heads))  # NormFormer head scaling (--scale-heads)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, H, S, head_dim] of x [B, S, C]."""
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """x [B, L, C] attends to k, v [B, H, S, hd]; bias broadcasts to [B, H, L, S] (-inf masks)."""
        b, n, c = x.shape
        q = self._split(self.q_proj(x) * self.scaling)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        o = o * self.c_attn.view(1, -1, 1, 1).to(o.dtype)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, c))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: OFAConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.self_attn = Attention(d, cfg.heads, cfg.attn_scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, d)
        self.attn_ln = nn.LayerNorm(d)
        self.ffn_layernorm = nn.LayerNorm(cfg.ffn_dim)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.project_kv(h)
        x = x + self.attn_ln(self.self_attn(h, k, v, bias))
        return x + self.fc2(self.ffn_layernorm(F.gelu(self.fc1(self.final_layer_norm(x)))))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: OFAConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.self_attn = Attention(d, cfg.heads, cfg.attn_scale_factor)
        self.self_attn_ln = nn.LayerNorm(d)
        self.cross_attn_ln = nn.LayerNorm(d)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, cfg.heads, cfg.attn_scale_factor)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.ffn_layernorm = nn.LayerNorm(cfg.ffn_dim)
        self.fc1 = nn.Linear(d, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(
        self,
        x: torch.Tensor,
        self_bias: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        cross_bias: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        start: int,
    ) -> torch.Tensor:
        """x [N, L, C] holds positions start..start+L-1; N = images x group (beams of one image are adjacent)."""
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.project_kv(h)
        if cache is not None:  # write this step's keys/values, attend to the whole prefix
            ck, cv = cache
            ck[:, :, start : start + x.shape[1]] = k
            cv[:, :, start : start + x.shape[1]] = v
            k, v = ck[:, :, : start + x.shape[1]], cv[:, :, : start + x.shape[1]]
        x = x + self.self_attn_ln(self.self_attn(h, k, v, self_bias))
        h = self.encoder_attn_layer_norm(x)
        n, length, c = h.shape
        b = cross_k.shape[0]
        grouped = h.reshape(b, (n // b) * length, c)  # all beams of an image query the same keys/values
        x = x + self.cross_attn_ln(
            self.encoder_attn(grouped, cross_k, cross_v, cross_bias).reshape(n, length, c)
        )
        return x + self.fc2(self.ffn_layernorm(F.gelu(self.fc1(self.final_layer_norm(x)))))


def _rel_tables(layers: int, rows: int, heads: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Embedding(rows, heads) for _ in range(layers))


def _register_common_buffers(module: nn.Module, cfg: OFAConfig) -> None:
    """The buffers both encoder and decoder carry, with the official names in the official order."""
    module.register_buffer("version", torch.tensor([STATE_DICT_VERSION]))
    module.register_buffer("token_rp_bucket", token_buckets(cfg.token_bucket_size))
    module.register_buffer("image_rp_bucket", image_buckets(cfg.image_bucket_size))


def _rel_bias(table: nn.Module, buckets: torch.Tensor) -> torch.Tensor:
    """Per-head relative-position bias [H, Lq, Lk] looked up from a [buckets, H] table."""
    assert isinstance(table, nn.Embedding)
    return table.weight[buckets].permute(2, 0, 1)


def _pos_bias(
    q_lin: nn.Linear, k_lin: nn.Linear, q_pos: torch.Tensor, k_pos: torch.Tensor, heads: int, scaling: float
):
    """Absolute-position attention bias [H, Lq, Lk] = (q_lin(q_pos) * s) . k_lin(k_pos)^T per head."""
    q = (q_lin(q_pos) * scaling).view(q_pos.shape[0], heads, -1).transpose(0, 1)
    k = k_lin(k_pos).view(k_pos.shape[0], heads, -1).transpose(0, 1)
    return q @ k.transpose(-1, -2)


class Encoder(nn.Module):
    version: torch.Tensor
    token_rp_bucket: torch.Tensor
    image_rp_bucket: torch.Tensor

    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        d, h = cfg.embed_dim, cfg.heads
        self.cfg = cfg
        _register_common_buffers(self, cfg)
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(d)
        self.type_embedding = nn.Embedding(2, d)
        self.embed_images = ResNet(cfg.resnet_blocks)
        self.image_proj = nn.Linear(1024, d)
        self.patch_layernorm_embedding = nn.LayerNorm(d)
        self.embed_positions = nn.Embedding(cfg.max_positions + 2, d)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, d)
        self.pos_ln = nn.LayerNorm(d)
        self.image_pos_ln = nn.LayerNorm(d)
        self.pos_q_linear = nn.Linear(d, d)
        self.pos_k_linear = nn.Linear(d, d)
        self.pos_scaling = (d / h * cfg.attn_scale_factor) ** -0.5
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(d)
        self.token_rel_pos_table_list = _rel_tables(cfg.encoder_layers, 2 * cfg.token_bucket_size - 1, h)
        self.image_rel_pos_table_list = _rel_tables(
            cfg.encoder_layers, (2 * cfg.image_bucket_size - 1) ** 2 + 3, h
        )

    def forward(
        self, src_tokens: torch.Tensor, patch_images: torch.Tensor, patch_masks: torch.Tensor | None = None
    ) -> EncoderOut:
        b, lt = src_tokens.shape
        dev = src_tokens.device
        feat = self.embed_images(patch_images)  # B, 1024, gh, gw
        gh, gw = feat.shape[-2:]
        img_pos = image_position_ids(gh, gw, self.cfg.image_bucket_size, dev)
        ix = self.image_proj(feat.flatten(2).transpose(1, 2))
        ix = self.patch_layernorm_embedding(ix + self.type_embedding.weight[1])
        tx = self.layernorm_embedding(self.embed_tokens(src_tokens) + self.type_embedding.weight[0])
        x = torch.cat([ix, tx], 1)
        li = ix.shape[1]
        img_pad = torch.zeros(b, li, dtype=torch.bool, device=dev)
        if patch_masks is not None:
            img_pad |= ~patch_masks.to(dev, torch.bool)[
                :, None
            ]  # a sample without an image masks its patches
        pad = torch.cat([img_pad, src_tokens.eq(PAD)], 1)
        has_pad = bool(pad.any())
        if has_pad:
            x = x * (~pad).unsqueeze(-1).to(x.dtype)
        pos = torch.cat(
            [
                self.image_pos_ln(self.embed_image_positions(img_pos)),
                self.pos_ln(self.embed_positions(torch.arange(lt, device=dev))),
            ],
            0,
        )
        abs_bias = _pos_bias(self.pos_q_linear, self.pos_k_linear, pos, pos, self.cfg.heads, self.pos_scaling)
        tb = self.token_rp_bucket[:lt, :lt]
        ib = self.image_rp_bucket[img_pos][:, img_pos]
        pad_bias = _padding_bias(pad, x.dtype) if has_pad else None
        tables = zip(self.layers, self.token_rel_pos_table_list, self.image_rel_pos_table_list)
        for layer, token_table, image_table in tables:
            bias = abs_bias.clone()
            bias[:, li:, li:] += _rel_bias(token_table, tb)
            bias[:, :li, :li] += _rel_bias(image_table, ib)
            bias = bias.unsqueeze(0) if pad_bias is None else bias.unsqueeze(0) + pad_bias
            x = layer(x, bias)
        return EncoderOut(self.layer_norm(x), pad, pos)


def _padding_bias(pad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, 1, S] additive key mask: -inf at padded keys."""
    zeros = torch.zeros(pad.shape, dtype=dtype, device=pad.device)
    return zeros.masked_fill(pad, float("-inf"))[:, None, None, :]


@dataclasses.dataclass
class DecoderState:
    """Per-batch decoder inputs that do not change between steps, plus the optional self-attention cache.

    Rows are images x group (the beams of an image are adjacent); cross-attention keys/values are per image.
    """

    cross_k: list[torch.Tensor]  # per layer [B, H, S, hd]
    cross_v: list[torch.Tensor]
    cross_pos_bias: torch.Tensor  # [H, max_len, S]
    pad_bias: torch.Tensor | None  # [B, 1, 1, S] or None when no key is padded
    self_bias: list[torch.Tensor]  # per layer [H, max_len, max_len], causal mask included
    group: int
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer [N, H, max_len, hd]

    def reorder(self, rows: torch.Tensor) -> None:
        """Follow the beam search: row i of the cache becomes old row rows[i] (beams stay within an image)."""
        if self.cache is not None:
            self.cache = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cache]

    def select_images(self, images: torch.Tensor) -> None:
        """Keep only the given images (batch reduction after some finish); rows follow their image."""
        rows = (images[:, None] * self.group + torch.arange(self.group, device=images.device)).flatten()
        self.cross_k = [k.index_select(0, images) for k in self.cross_k]
        self.cross_v = [v.index_select(0, images) for v in self.cross_v]
        if self.pad_bias is not None:
            self.pad_bias = self.pad_bias.index_select(0, images)
        self.reorder(rows)

    def cross_bias(self, start: int, length: int) -> torch.Tensor:
        bias = self.cross_pos_bias[:, start : start + length].repeat(1, self.group, 1).unsqueeze(0)
        return bias if self.pad_bias is None else bias + self.pad_bias


class Decoder(nn.Module):
    version: torch.Tensor
    token_rp_bucket: torch.Tensor
    image_rp_bucket: torch.Tensor
    image_position_idx: torch.Tensor

    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        d, h = cfg.embed_dim, cfg.heads
        self.cfg = cfg
        _register_common_buffers(self, cfg)
        self.register_buffer(
            "image_position_idx", decoder_image_position_idx(cfg.code_image_size, cfg.image_bucket_size)
        )
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(d)
        self.embed_positions = nn.Embedding(cfg.max_positions + 2, d)
        # Image positions, code layer norm and image tables serve image-code generation only (kept for exact
        # state dicts).
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, d)
        self.pos_ln = nn.LayerNorm(d)
        self.image_pos_ln = nn.LayerNorm(d)
        self.self_pos_q_linear = nn.Linear(d, d)
        self.self_pos_k_linear = nn.Linear(d, d)
        self.cross_pos_q_linear = nn.Linear(d, d)
        self.cross_pos_k_linear = nn.Linear(d, d)
        self.code_layernorm_embedding = nn.LayerNorm(d)
        self.pos_scaling = (d / h * cfg.attn_scale_factor) ** -0.5
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.layer_norm = nn.LayerNorm(d)
        self.output_projection = nn.Linear(d, embed_tokens.num_embeddings, bias=False)
        self.output_projection.weight = embed_tokens.weight  # tied (share_all_embeddings)
        self.token_rel_pos_table_list = _rel_tables(cfg.decoder_layers, 2 * cfg.token_bucket_size - 1, h)
        self.image_rel_pos_table_list = _rel_tables(
            cfg.decoder_layers, (2 * cfg.image_bucket_size - 1) ** 2 + 3, h
        )

    def init_state(self, enc: EncoderOut, group: int, max_len: int, use_cache: bool) -> DecoderState:
        """Everything the steps share: cross K/V once per image, position biases for max_len positions."""
        h = self.cfg.heads
        x = enc.x
        dev, dt = x.device, x.dtype
        if max_len > self.cfg.max_positions:
            raise ValueError(f"max_len {max_len} exceeds the model's {self.cfg.max_positions} positions")
        tp = self.pos_ln(self.embed_positions(torch.arange(max_len, device=dev)))
        self_abs = _pos_bias(self.self_pos_q_linear, self.self_pos_k_linear, tp, tp, h, self.pos_scaling)
        causal = torch.full((max_len, max_len), float("-inf"), device=dev, dtype=dt).triu(1)
        tb = self.token_rp_bucket[:max_len, :max_len]
        self_bias = [self_abs + _rel_bias(t, tb) + causal for t in self.token_rel_pos_table_list]
        cross = _pos_bias(self.cross_pos_q_linear, self.cross_pos_k_linear, tp, enc.pos, h, self.pos_scaling)
        kv = [layer.encoder_attn.project_kv(x) for layer in self.layers]  # type: ignore[union-attr,operator]
        cache = None
        if use_cache:
            n = x.shape[0] * group
            shape = (n, h, max_len, self.cfg.head_dim)
            cache = [(x.new_zeros(shape), x.new_zeros(shape)) for _ in self.layers]
        return DecoderState(
            cross_k=[k for k, _ in kv],
            cross_v=[v for _, v in kv],
            cross_pos_bias=cross,
            pad_bias=_padding_bias(enc.padding_mask, dt) if bool(enc.padding_mask.any()) else None,
            self_bias=self_bias,
            group=group,
            cache=cache,
        )

    def forward(self, tokens: torch.Tensor, state: DecoderState, start: int = 0) -> torch.Tensor:
        """Hidden states [N, L, C] (after the final layer norm) for tokens at positions start..start+L-1."""
        length = tokens.shape[1]
        end = start + length
        x = self.layernorm_embedding(self.embed_tokens(tokens))
        cross_bias = state.cross_bias(start, length)
        for i, layer in enumerate(self.layers):
            self_bias = state.self_bias[i][:, start:end, :end].unsqueeze(0)
            cache = state.cache[i] if state.cache is not None else None
            x = layer(x, self_bias, state.cross_k[i], state.cross_v[i], cross_bias, cache, start)
        return self.layer_norm(x)


class OFA(nn.Module):
    """OFA caption model: `encoder.*` and `decoder.*` exactly as in the official state dict."""

    def __init__(self, cfg: OFAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        shared = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.encoder = Encoder(cfg, shared)
        self.decoder = Decoder(cfg, shared)

    # ------------------------------------------------------------ construction and loading
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> OFA:
        """Load an official OFA caption checkpoint (.pt or .pt.xz) safely; weights cast to `dtype`."""
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        ckpt = read_checkpoint(path)
        sd = ckpt["model"]
        model = cls.empty(config_from_checkpoint(checkpoint_args(ckpt), sd), dtype, device)
        load_official_state_dict(model, sd)
        return model

    @classmethod
    def empty(cls, cfg: OFAConfig, dtype: torch.dtype, device: str | torch.device) -> OFA:
        """An OFA with uninitialised parameters (about to be overwritten) and computed buffers."""
        with torch.device("meta"):
            model = cls(cfg)
        model = model.to_empty(device=device)
        model.tie_weights()
        model.init_buffers()
        model.to(dtype)
        return model.eval()

    def tie_weights(self) -> None:
        """Re-tie the shared embedding (module conversions such as `to_empty` may untie parameters)."""
        self.decoder.embed_tokens = self.encoder.embed_tokens
        self.decoder.output_projection.weight = self.encoder.embed_tokens.weight

    def init_buffers(self) -> None:
        """(Re)compute every buffer, e.g. after `to_empty()`; the tables are pure functions of the config."""
        c = self.cfg
        parts: tuple[Encoder | Decoder, ...] = (self.encoder, self.decoder)
        for part in parts:
            dev = part.version.device
            part.version = torch.full_like(part.version, STATE_DICT_VERSION)
            part.token_rp_bucket = token_buckets(c.token_bucket_size).to(dev)
            part.image_rp_bucket = image_buckets(c.image_bucket_size).to(dev)
        self.decoder.image_position_idx = decoder_image_position_idx(
            c.code_image_size, c.image_bucket_size
        ).to(self.decoder.version.device)

    @property
    def device(self) -> torch.device:
        return self.encoder.type_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.type_embedding.weight.dtype

    # ------------------------------------------------------------ inference
    def encode(
        self, src_tokens: torch.Tensor, patch_images: torch.Tensor, patch_masks: torch.Tensor | None = None
    ) -> EncoderOut:
        return self.encoder(src_tokens.to(self.device), patch_images.to(self.device, self.dtype), patch_masks)

    def forward(
        self,
        src_tokens: torch.Tensor,
        patch_images: torch.Tensor,
        prev_output_tokens: torch.Tensor,
        patch_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits [B, L, V] of prev_output_tokens (one full, non-incremental decoder pass)."""
        enc = self.encode(src_tokens, patch_images, patch_masks)
        state = self.decoder.init_state(enc, group=1, max_len=prev_output_tokens.shape[1], use_cache=False)
        return self.decoder.output_projection(self.decoder(prev_output_tokens.to(self.device), state))

    def decode_step(self, tokens: torch.Tensor, state: DecoderState, step: int) -> torch.Tensor:
        """fp32 log-probabilities [N, V] of the next token after tokens[:, :step+1]."""
        if state.cache is not None:  # feed only the newest token; earlier keys/values are cached
            hidden = self.decoder(tokens[:, step : step + 1], state, start=step)
        else:
            hidden = self.decoder(tokens[:, : step + 1], state, start=0)
        logits = self.decoder.output_projection(hidden[:, -1])
        return F.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def generate(
        self,
        src_tokens: torch.Tensor,
        patch_images: torch.Tensor,
        patch_masks: torch.Tensor | None = None,
        beam: int = 5,
        max_len: int = 16,
        min_len: int = 1,
        no_repeat_ngram: int = 3,
        lenpen: float = 1.0,
        use_cache: bool = True,
    ) -> list[list[tuple[torch.Tensor, float]]]:
        """fairseq beam search; per sample, hypotheses best first as (tokens without BOS ending in EOS, score)."""
        gen = GenerationConfig(beam, max_len, min_len, no_repeat_ngram, lenpen, use_cache)
        hyps = beam_search(self, src_tokens, patch_images, patch_masks, gen)
        return [[(h.tokens, h.score) for h in sample] for sample in hyps]


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied embeddings counted once), the way the OFA papers count."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "BOS",
    "EOS",
    "OFA",
    "PAD",
    "UNK",
    "DecoderState",
    "EncoderOut",
    "count_parameters",
]
