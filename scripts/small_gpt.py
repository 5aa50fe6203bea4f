"""Our own PyTorch implementation of the release's GPT skeleton with MLRA-4, MLA and GQA
attention (models/VARIANTS.md sections 1, 4.2, 4.6, 4.10); it trains the default model.
Parameter names, shapes and state_dict order are exactly the release's (section 3.1), including
the bare input-major attn.kv_b_proj [4, d_c, n_head * 2 * d_n] of MLRA-4; wte and lm_head are one
Parameter. Runs on torch 1.13 (CPU, no SDPA) and torch 2.x (CUDA, SDPA)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

kNormEps = 1e-6
kRopeBase = 10000.0
kVariants = ("mlra_4", "mla", "gqa")


class RMSNorm(nn.Module):
    """fp32 statistics, cast back to the input dtype before the weight multiply (section 1.4)."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        n = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + kNormEps)
        return self.weight * n.type_as(x)


def rope(x, positions):
    """Rotate-half RoPE over the last dim of x [..., T, n]; positions [T]. cos/sin in fp32,
    then cast to x's dtype (section 1.6)."""
    n = x.shape[-1]
    inv_freq = 1.0 / (kRopeBase ** (torch.arange(0, n, 2, device=x.device).float() / n))
    theta = positions.float()[:, None] * inv_freq[None, :]  # [T, n/2]
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    u1, u2 = x[..., : n // 2], x[..., n // 2 :]
    return torch.cat([u1 * cos - u2 * sin, u1 * sin + u2 * cos], dim=-1)


def causal_attention(q, k, v, scale):
    """q, k [B, H, T, d_qk]; v [B, H, T, d_v] -> [B, H, T, d_v]; key index <= query index."""
    k, v = k.to(q.dtype), v.to(q.dtype)  # einsum may leave autocast's dtype
    if hasattr(F, "scaled_dot_product_attention") and q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    t = q.shape[-2]
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(v.dtype)
    return torch.matmul(p, v)


class GqaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h, hd = cfg["n_embd"], cfg["n_head"], cfg["head_dim"]
        self.h, self.hd, self.group = h, hd, cfg["group_size"]
        self.kv = h // self.group
        self.c_q = nn.Linear(d, h * hd, bias=False)
        self.c_k = nn.Linear(d, self.kv * hd, bias=False)
        self.c_v = nn.Linear(d, self.kv * hd, bias=False)
        self.c_proj = nn.Linear(h * hd, d, bias=False)

    def forward(self, x, pos):
        b, t, _ = x.shape
        q = self.c_q(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.c_k(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.c_v(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, pos), rope(k, pos)
        # Query head h reads KV head floor(h / group_size) (section 4.2).
        k = k.repeat_interleave(self.group, dim=1)
        v = v.repeat_interleave(self.group, dim=1)
        o = causal_attention(q, k, v, 1.0 / math.sqrt(self.hd))
        return self.c_proj(o.transpose(1, 2).reshape(b, t, self.h * self.hd))


class LatentQuery(nn.Module):
    """The shared latent q path: c_q = RMSNorm(W_qa x) * sqrt(d / r_q); q = W_qb c_q.
    Subclasses call nn.Module.__init__ and then init_query, so they choose the key order."""

    def init_query(self, cfg):
        d, h = cfg["n_embd"], cfg["n_head"]
        self.dn, self.dr = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
        self.q_scale = math.sqrt(d / cfg["q_lora_rank"])
        self.q_a_proj = nn.Linear(d, cfg["q_lora_rank"], bias=False)
        self.q_a_layernorm = RMSNorm(cfg["q_lora_rank"])
        self.q_b_proj = nn.Linear(cfg["q_lora_rank"], h * (self.dn + self.dr), bias=False)

    def query(self, x, pos, h):
        """-> [B, H, T, d_n + d_r] with RoPE on the last d_r dims."""
        b, t, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)) * self.q_scale)
        q = q.view(b, t, h, self.dn + self.dr).transpose(1, 2)
        return torch.cat([q[..., : self.dn], rope(q[..., self.dn :], pos)], dim=-1)


class MlaAttention(LatentQuery):
    def __init__(self, cfg):
        nn.Module.__init__(self)
        self.init_query(cfg)
        d, h = cfg["n_embd"], cfg["n_head"]
        self.h, self.rkv = h, cfg["kv_lora_rank"]
        self.kv_scale = math.sqrt(d / self.rkv)
        self.kv_a_proj_with_mqa = nn.Linear(d, self.rkv + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.rkv)
        self.kv_b_proj = nn.Linear(self.rkv, h * 2 * self.dn, bias=False)
        self.c_proj = nn.Linear(h * self.dn, d, bias=False)

    def forward(self, x, pos):
        b, t, _ = x.shape
        q = self.query(x, pos, self.h)
        a = self.kv_a_proj_with_mqa(x)
        c = self.kv_a_layernorm(a[..., : self.rkv]) * self.kv_scale
        k_pe = rope(a[..., self.rkv :], pos)  # [B, T, d_r], one key shared by all heads
        kv = self.kv_b_proj(c).view(b, t, self.h, 2 * self.dn).transpose(1, 2)
        k = torch.cat([kv[..., : self.dn], k_pe[:, None].expand(b, self.h, t, self.dr)], dim=-1)
        o = causal_attention(q, k, kv[..., self.dn :], 1.0 / math.sqrt(self.dn + self.dr))
        return self.c_proj(o.transpose(1, 2).reshape(b, t, self.h * self.dn))


class Mlra4Attention(LatentQuery):
    kLatents = 4

    def __init__(self, cfg):
        # The bare Parameter is registered first so it leads the module's state_dict (section 3.1).
        nn.Module.__init__(self)
        d, h = cfg["n_embd"], cfg["n_head"]
        dn = cfg["qk_nope_head_dim"]
        self.dc = cfg["kv_lora_rank"] // self.kLatents
        self.kv_b_proj = nn.Parameter(torch.empty(self.kLatents, self.dc, h * 2 * dn))
        self.init_query(cfg)
        self.h = h
        self.kv_scale = math.sqrt(d / self.dc)
        self.kv_a_proj_with_mqa = nn.Linear(d, cfg["kv_lora_rank"] + self.dr, bias=False)
        self.kv_a_layernorms = nn.ModuleList([RMSNorm(self.dc) for _ in range(self.kLatents)])
        self.c_proj = nn.Linear(h * dn, d, bias=False)

    def forward(self, x, pos):
        b, t, _ = x.shape
        L, h, dn, dr = self.kLatents, self.h, self.dn, self.dr
        q = self.query(x, pos, h)  # [B, H, T, dq]
        a = self.kv_a_proj_with_mqa(x)
        c = torch.stack(
            [self.kv_a_layernorms[l](a[..., l * self.dc : (l + 1) * self.dc]) for l in range(L)],
            dim=2) * self.kv_scale  # [B, T, L, d_c]
        k_pe = rope(a[..., L * self.dc :], pos)  # [B, T, d_r]
        # kv[b, l, t, o] = sum_i c[b, t, l, i] P[l, i, o], o = 2 d_n h + j (k_nope j < d_n, then v).
        kv = torch.einsum("btli,lio->blto", c, self.kv_b_proj)
        kv = kv.view(b, L, t, h, 2 * dn).permute(0, 1, 3, 2, 4)  # [B, L, H, T, 2 d_n]
        k = torch.cat([kv[..., :dn], k_pe[:, None, None].expand(b, L, h, t, dr)], dim=-1)
        qq = q[:, None].expand(b, L, h, t, dn + dr)
        # Four separately normalised softmaxes per head, one per latent (section 4.10).
        o = causal_attention(qq.reshape(b, L * h, t, dn + dr), k.reshape(b, L * h, t, dn + dr),
                             kv[..., dn:].reshape(b, L * h, t, dn), 1.0 / math.sqrt(dn + dr))
        o = o.view(b, L, h, t, dn).sum(dim=1) * 0.5
        return self.c_proj(o.transpose(1, 2).reshape(b, t, h * dn))


kAttention = {"mlra_4": Mlra4Attention, "mla": MlaAttention, "gqa": GqaAttention}


class Mlp(nn.Module):
    def __init__(self, d, inter):
        super().__init__()
        self.c_fc1 = nn.Linear(d, inter, bias=False)
        self.c_fc2 = nn.Linear(d, inter, bias=False)
        self.c_proj = nn.Linear(inter, d, bias=False)

    def forward(self, x):
        return self.c_proj(F.silu(self.c_fc1(x)) * self.c_fc2(x))


class Block(nn.Module):
    def __init__(self, cfg, variant, dropout):
        super().__init__()
        self.attn = kAttention[variant](cfg)
        self.mlp = Mlp(cfg["n_embd"], cfg["intermediate_size"])
        self.input_layernorm = RMSNorm(cfg["n_embd"])
        self.post_attention_layernorm = RMSNorm(cfg["n_embd"])
        self.drop = nn.Dropout(dropout)  # training only; holds no parameters

    def forward(self, x, pos):
        x = x + self.drop(self.attn(self.input_layernorm(x), pos))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class GPT(nn.Module):
    def __init__(self, cfg, variant, dropout=0.0):
        super().__init__()
        if variant not in kVariants:
            raise ValueError(f"variant {variant} not in {kVariants}")
        self.cfg, self.variant = cfg, variant
        d, v = cfg["n_embd"], cfg["vocab_size"]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(v, d),
            h=nn.ModuleList([Block(cfg, variant, dropout) for _ in range(cfg["n_layer"])])))
        self.layernorm = RMSNorm(d)
        self.lm_head = nn.Linear(d, v, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # one Parameter, two state_dict keys
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        out_std = std / math.sqrt(2 * self.cfg["n_layer"])
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        """idx [B, T] -> logits [B, T, V] (fp32 under autocast too); positions 0..T-1."""
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.wte(idx)
        for block in self.transformer.h:
            x = block(x, pos)
        return self.lm_head(self.layernorm(x)).float()
