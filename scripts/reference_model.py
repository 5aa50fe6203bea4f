#!/usr/bin/python3
"""Independent float64 PyTorch reference of every attention variant of the MLRA release
(models/VARIANTS.md sections 1, 4 and 5), written from the spec and run from a plain state_dict.

`Reference.forward` is the full-prefix causal forward (positions 0..T-1, plain non-absorbed
latent math: k_nope and v are expanded from the latents). `Decoder` is an incremental decode
that keeps the per-variant cache of section 4 (latent family: normalised, scaled latents plus
roped k_pe, attended in the absorbed form of 5.4). Invariant checked by check_reference.py:
decoding a prefix token by token gives the full forward's logits at every position.
"""
import json
import math
import os

import torch

kNormEps = 1e-6
kRopeBase = 10000.0
kLatentKinds = ("mla", "gla2", "gla4", "mlra2", "mlra4")

# name -> (attention kind, gated, no_scale); the 19 variants that exist in the release.
VARIANTS = {
    "mha": ("mha", False, False), "gqa": ("gqa", False, False), "mqa": ("mqa", False, False),
    "gta": ("gta", False, False), "mfa": ("mfa", False, False), "tpa": ("tpa", False, False),
    "mla": ("mla", False, False), "gla2": ("gla2", False, False), "gla4": ("gla4", False, False),
    "mlra2": ("mlra2", False, False), "mlra4": ("mlra4", False, False),
    "gqa_gated": ("gqa", True, False), "mla_gated": ("mla", True, False),
    "gla2_gated": ("gla2", True, False), "mlra2_gated": ("mlra2", True, False),
    "mlra4_gated": ("mlra4", True, False), "mla_no_scale": ("mla", False, True),
    "gla2_no_scale": ("gla2", False, True), "mlra2_no_scale": ("mlra2", False, True),
}


class Spec:
    """GPTConfig fields of one config.json plus the variant, and the derived constants of 2.4."""

    def __init__(self, config, variant):
        self.variant = variant
        self.kind, self.gated, self.no_scale = VARIANTS[variant]
        self.cfg = config
        self.d = config["n_embd"]
        self.n_head = config["n_head"]
        self.n_layer = config["n_layer"]
        self.vocab = config["vocab_size"]
        self.ff = config["intermediate_size"]
        if self.latent:
            self.dn = config["qk_nope_head_dim"]
            self.dr = config["qk_rope_head_dim"]
            self.r_q = config["q_lora_rank"]
            self.r_kv = config["kv_lora_rank"]
            self.n_latent = {"mla": 1, "gla2": 2}.get(self.kind, 4)  # 4 is hard-coded (F10)
            self.dc = self.r_kv // self.n_latent
            self.q_scale = 1.0 if self.no_scale else math.sqrt(self.d / self.r_q)
            self.kv_scale = 1.0 if self.no_scale else math.sqrt(self.d / self.dc)
            self.out_scale = {"mlra2": 1.0 if self.no_scale else 1 / math.sqrt(2),
                              "mlra4": 0.5}.get(self.kind, 1.0)
            self.softmax_scale = 1 / math.sqrt(self.dn + self.dr)
        else:
            self.hd = config["head_dim"]
            self.softmax_scale = 1 / math.sqrt(self.hd)
            group = {"mha": 1, "mfa": self.n_head, "tpa": 1}.get(self.kind)
            self.group = group if group is not None else config["group_size"]
            self.n_kv = self.n_head // self.group

    @property
    def latent(self):
        return self.kind in kLatentKinds

    def latent_units(self):
        """(latent l, first query head, number of heads) for every latent: the (l, h) pairs."""
        h = self.n_head
        if self.kind == "mla":
            return [(0, 0, h)]
        if self.kind == "gla2":
            return [(l, l * h // 2, h // 2) for l in range(2)]
        if self.kind == "gla4":
            return [(l, l * h // 4, h // 4) for l in range(4)]
        if self.kind == "mlra2":
            return [(l, (l % 2) * h // 2, h // 2) for l in range(4)]
        return [(l, 0, h) for l in range(4)]

    def latent_norm_name(self, l):
        if self.kind == "mla":
            return "attn.kv_a_layernorm.weight"
        if self.kind == "gla2":
            return f"attn.kv_a_layernorm_{l + 1}.weight"
        return f"attn.kv_a_layernorms.{l}.weight"

    def up_proj(self, lw, l):
        """Latent l's up-projection as input-major P_l [d_c, n_heads_l * 2 * d_n]."""
        if self.kind == "mla":
            return lw["attn.kv_b_proj.weight"].t()
        if self.kind == "gla2":
            return lw[f"attn.kv_b_proj_{l + 1}.weight"].t()
        return lw["attn.kv_b_proj"][l]


def expected_tensors(spec):
    """(name, shape) in state_dict order, as models/tensor_layout.cpp and models/VARIANTS.md 3-4."""
    d, h, ff = spec.d, spec.n_head, spec.ff
    attn = []
    if spec.latent:
        dq = spec.dn + spec.dr
        gate = [("attn.gated_proj.weight", (d, d))] if spec.gated else []
        q_path = [("attn.q_a_proj.weight", (spec.r_q, d)), ("attn.q_a_layernorm.weight", (spec.r_q,)),
                  ("attn.q_b_proj.weight", (h * dq, spec.r_q)),
                  ("attn.kv_a_proj_with_mqa.weight", (spec.r_kv + spec.dr, d))]
        out = [("attn.c_proj.weight", (d, h * spec.dn))]
        if spec.kind == "mla":
            attn = gate + q_path + [("attn.kv_a_layernorm.weight", (spec.r_kv,)),
                                    ("attn.kv_b_proj.weight", (h * 2 * spec.dn, spec.r_kv))] + out
        elif spec.kind == "gla2":
            half = (h // 2) * 2 * spec.dn
            attn = gate + q_path + [("attn.kv_a_layernorm_1.weight", (spec.dc,)),
                                    ("attn.kv_a_layernorm_2.weight", (spec.dc,)),
                                    ("attn.kv_b_proj_1.weight", (half, spec.dc)),
                                    ("attn.kv_b_proj_2.weight", (half, spec.dc))] + out
        else:
            per_latent = spec.latent_units()[0][2] * 2 * spec.dn
            norms = [(spec.latent_norm_name(l), (spec.dc,)) for l in range(4)]
            attn = [("attn.kv_b_proj", (4, spec.dc, per_latent))] + gate + q_path + norms + out
    else:
        hd = spec.hd
        if spec.kind in ("mha", "gqa", "mqa"):
            gate = [("attn.c_gated.weight", (d, d))] if spec.gated else []
            attn = gate + [("attn.c_q.weight", (h * hd, d)), ("attn.c_k.weight", (spec.n_kv * hd, d)),
                           ("attn.c_v.weight", (spec.n_kv * hd, d))]
        elif spec.kind == "gta":
            attn = [("attn.c_q.weight", (h * hd, d)), ("attn.kv_proj.weight", (spec.n_kv * hd, d)),
                    ("attn.W_rope_k.weight", (hd // 2, d))]
        elif spec.kind == "mfa":
            sq = spec.cfg["share_q_dim"]
            attn = [("attn.c_q.weight", (sq, d)), ("attn.q_layernorm.weight", (sq,)),
                    ("attn.w_q.weight", (h * hd, sq)), ("attn.c_k.weight", (hd, d)),
                    ("attn.c_v.weight", (hd, d))]
        else:
            rq, r = spec.cfg["q_rank"], spec.cfg["rank"]
            attn = [(f"attn.c_qkv.W_A_{n}.weight", (h * k, d)) for n, k in (("q", rq), ("k", r), ("v", r))]
            attn += [(f"attn.c_qkv.W_B_{n}.weight", (k * hd, d)) for n, k in (("q", rq), ("k", r), ("v", r))]
        attn.append(("attn.c_proj.weight", (d, h * hd)))
    names = [("transformer.wte.weight", (spec.vocab, d))]
    for i in range(spec.n_layer):
        p = f"transformer.h.{i}."
        names += [(p + n, s) for n, s in attn]
        names += [(p + "mlp.c_fc1.weight", (ff, d)), (p + "mlp.c_fc2.weight", (ff, d)),
                  (p + "mlp.c_proj.weight", (d, ff)), (p + "input_layernorm.weight", (d,)),
                  (p + "post_attention_layernorm.weight", (d,))]
    names += [("layernorm.weight", (d,)), ("lm_head.weight", (spec.vocab, d))]
    return names


def rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + kNormEps) * w


def rope(x, pos):
    """Half-split RoPE of the last dim of x [T, ..., n] at integer positions pos [T]."""
    n = x.shape[-1]
    half = n // 2
    inv_freq = kRopeBase ** (-2.0 * torch.arange(half, dtype=torch.float64) / n)
    ang = pos.to(torch.float64)[:, None] * inv_freq[None, :]
    shape = [x.shape[0]] + [1] * (x.dim() - 2) + [half]
    cos, sin = ang.cos().view(shape).to(x.dtype), ang.sin().view(shape).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def attend(q, k, v, scale, causal):
    """q [Tq, H, dk], k [Tk, H, dk], v [Tk, H, dv] -> [Tq, H, dv]; causal aligns the last rows."""
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    if causal:
        tq, tk = q.shape[0], k.shape[0]
        mask = torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v)


def load_checkpoint(folder, dtype=torch.float64):
    """config.json and the state_dict of a save_pretrained folder (sharded or single .bin)."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(folder, "pytorch_model.bin.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["pytorch_model.bin"]
    sd = {}
    for name in files:
        sd.update(torch.load(os.path.join(folder, name), map_location="cpu"))
    return config, {k: v.to(dtype) for k, v in sd.items()}


class Reference:
    """The whole model from a state_dict; all math in the state_dict's dtype (float64 intended)."""

    def __init__(self, spec, sd):
        self.s = spec
        self.sd = sd
        self.emb = sd["transformer.wte.weight"]
        assert torch.equal(self.emb, sd["lm_head.weight"]), "tied embedding differs"
        self.layers = [{k[len(f"transformer.h.{i}."):]: v for k, v in sd.items()
                        if k.startswith(f"transformer.h.{i}.")} for i in range(spec.n_layer)]

    # ---------------------------------------------------------------- shared skeleton (section 1)
    def mlp(self, lw, x):
        a = x @ lw["mlp.c_fc1.weight"].t()
        b = x @ lw["mlp.c_fc2.weight"].t()
        return (torch.nn.functional.silu(a) * b) @ lw["mlp.c_proj.weight"].t()

    def head(self, x):
        return rms_norm(x, self.sd["layernorm.weight"]) @ self.emb.t()

    def finish_attention(self, lw, x, o):
        """o [T, H*dv] head outputs (branch sums done) -> gate (4.11) -> c_proj."""
        if self.s.gated:
            gate_name = "attn.c_gated.weight" if self.s.kind == "gqa" else "attn.gated_proj.weight"
            o = torch.sigmoid(x @ lw[gate_name].t()) * o
        return o @ lw["attn.c_proj.weight"].t()

    def forward(self, ids):
        """ids: list of token ids at positions 0..T-1 -> logits [T, vocab]."""
        pos = torch.arange(len(ids))
        x = self.emb[torch.tensor(ids)]
        for lw in self.layers:
            h = rms_norm(x, lw["input_layernorm.weight"])
            attn = self.latent_attention if self.s.latent else self.kv_attention
            u = x + attn(lw, h, pos)
            x = u + self.mlp(lw, rms_norm(u, lw["post_attention_layernorm.weight"]))
        return self.head(x)

    # ---------------------------------------------------------------- K/V family (4.1-4.5)
    def kv_queries(self, lw, x, pos):
        """x [T, d] -> q [T, H, dq] after RoPE."""
        s, t = self.s, x.shape[0]
        if s.kind == "mfa":
            cq = rms_norm(x @ lw["attn.c_q.weight"].t(), lw["attn.q_layernorm.weight"])
            return rope((cq @ lw["attn.w_q.weight"].t()).view(t, s.n_head, s.hd), pos)
        if s.kind == "tpa":
            rq = s.cfg["q_rank"]
            a = (x @ lw["attn.c_qkv.W_A_q.weight"].t()).view(t, s.n_head, rq)
            b = rope((x @ lw["attn.c_qkv.W_B_q.weight"].t()).view(t, rq, s.hd), pos)
            return torch.einsum("thr,trd->thd", a, b) / rq
        q = (x @ lw["attn.c_q.weight"].t()).view(t, s.n_head, s.hd)
        if s.kind == "gta":
            half = s.hd // 2
            return torch.cat([q[..., :half], rope(q[..., half:], pos)], -1)
        return rope(q, pos)

    def kv_entries(self, lw, x, pos):
        """x [T, d] -> the per-token cache entries of section 4 (dict of [T, ...] tensors)."""
        s, t = self.s, x.shape[0]
        if s.kind == "gta":
            half = s.hd // 2
            kv = (x @ lw["attn.kv_proj.weight"].t()).view(t, s.n_kv, s.hd)
            r = rope(x @ lw["attn.W_rope_k.weight"].t(), pos)
            return {"s": kv[..., :half], "u": kv[..., half:], "r": r}
        if s.kind == "tpa":
            r = s.cfg["rank"]
            f = {n: x @ lw[f"attn.c_qkv.W_{n}.weight"].t() for n in ("A_k", "A_v", "B_k", "B_v")}
            return {"a_k": f["A_k"].view(t, s.n_head, r), "a_v": f["A_v"].view(t, s.n_head, r),
                    "b_k": rope(f["B_k"].view(t, r, s.hd), pos), "b_v": f["B_v"].view(t, r, s.hd)}
        k = (x @ lw["attn.c_k.weight"].t()).view(t, s.n_kv, s.hd)
        v = (x @ lw["attn.c_v.weight"].t()).view(t, s.n_kv, s.hd)
        return {"k": rope(k, pos), "v": v}

    def kv_expand(self, c):
        """Cache entries -> per-query-head K [T, H, dk], V [T, H, dv]."""
        s = self.s
        if s.kind == "gta":
            sk = c["s"].repeat_interleave(s.group, 1)
            uk = c["u"].repeat_interleave(s.group, 1)
            r = c["r"][:, None, :].expand(-1, s.n_head, -1)
            return torch.cat([sk, r], -1), torch.cat([sk, uk], -1)
        if s.kind == "tpa":
            r = s.cfg["rank"]
            k = torch.einsum("thr,trd->thd", c["a_k"], c["b_k"]) / r
            v = torch.einsum("thr,trd->thd", c["a_v"], c["b_v"]) / r
            return k, v
        return c["k"].repeat_interleave(s.group, 1), c["v"].repeat_interleave(s.group, 1)

    def kv_attention(self, lw, x, pos):
        q = self.kv_queries(lw, x, pos)
        k, v = self.kv_expand(self.kv_entries(lw, x, pos))
        o = attend(q, k, v, self.s.softmax_scale, causal=True)
        return self.finish_attention(lw, x, o.reshape(x.shape[0], -1))

    # ---------------------------------------------------------------- latent family (4.6-4.11)
    def latent_queries(self, lw, x, pos):
        """x [T, d] -> q_nope [T, H, d_n], roped q_pe [T, H, d_r]."""
        s, t = self.s, x.shape[0]
        cq = rms_norm(x @ lw["attn.q_a_proj.weight"].t(), lw["attn.q_a_layernorm.weight"]) * s.q_scale
        q = (cq @ lw["attn.q_b_proj.weight"].t()).view(t, s.n_head, s.dn + s.dr)
        return q[..., :s.dn], rope(q[..., s.dn:], pos)

    def latent_entries(self, lw, x, pos):
        """x [T, d] -> ([c_l [T, d_c] normalised and scaled, per latent], roped k_pe [T, d_r])."""
        s = self.s
        a = x @ lw["attn.kv_a_proj_with_mqa.weight"].t()
        lat = [rms_norm(a[:, l * s.dc:(l + 1) * s.dc], lw[s.latent_norm_name(l)]) * s.kv_scale
               for l in range(s.n_latent)]
        return lat, rope(a[:, s.r_kv:], pos)

    def latent_attention(self, lw, x, pos):
        """Plain form: expand k_nope, v per head from each latent; one softmax per (l, h) pair."""
        s, t = self.s, x.shape[0]
        q_nope, q_pe = self.latent_queries(lw, x, pos)
        lat, k_pe = self.latent_entries(lw, x, pos)
        q = torch.cat([q_nope, q_pe], -1)
        o = torch.zeros(t, s.n_head, s.dn, dtype=x.dtype)
        for l, first, count in s.latent_units():
            kv = (lat[l] @ s.up_proj(lw, l)).view(t, count, 2 * s.dn)
            k = torch.cat([kv[..., :s.dn], k_pe[:, None, :].expand(-1, count, -1)], -1)
            heads = slice(first, first + count)
            o[:, heads] += s.out_scale * attend(q[:, heads], k, kv[..., s.dn:], s.softmax_scale, True)
        return self.finish_attention(lw, x, o.reshape(t, -1))


class Decoder:
    """Token-by-token decode with the caches of section 4 / 5.2; absorbed latent math (5.4)."""

    def __init__(self, ref):
        self.ref = ref
        self.caches = [None] * ref.s.n_layer
        self.t = 0

    def step(self, token):
        """Feeds one token at position self.t; returns its logits [vocab]."""
        ref, pos = self.ref, torch.tensor([self.t])
        x = ref.emb[torch.tensor([token])]
        for i, lw in enumerate(ref.layers):
            h = rms_norm(x, lw["input_layernorm.weight"])
            attn = self.latent_step if ref.s.latent else self.kv_step
            u = x + attn(i, lw, h, pos)
            x = u + ref.mlp(lw, rms_norm(u, lw["post_attention_layernorm.weight"]))
        self.t += 1
        return ref.head(x)[0]

    def append(self, i, entries):
        if self.caches[i] is None:
            self.caches[i] = entries
        else:
            self.caches[i] = {k: torch.cat([self.caches[i][k], v]) for k, v in entries.items()}
        return self.caches[i]

    def kv_step(self, i, lw, x, pos):
        cache = self.append(i, self.ref.kv_entries(lw, x, pos))
        k, v = self.ref.kv_expand(cache)
        o = attend(self.ref.kv_queries(lw, x, pos), k, v, self.ref.s.softmax_scale, causal=False)
        return self.ref.finish_attention(lw, x, o.reshape(1, -1))

    def latent_step(self, i, lw, x, pos):
        ref, s = self.ref, self.ref.s
        q_nope, q_pe = ref.latent_queries(lw, x, pos)  # [1, H, d_n], [1, H, d_r]
        lat, k_pe = ref.latent_entries(lw, x, pos)
        entries = {f"c{l}": c for l, c in enumerate(lat)}
        entries["k_pe"] = k_pe
        cache = self.append(i, entries)
        o = torch.zeros(s.n_head, s.dn, dtype=x.dtype)
        for l, first, count in s.latent_units():
            p = s.up_proj(lw, l).view(s.dc, count, 2 * s.dn)
            w_uk, w_uv = p[..., :s.dn], p[..., s.dn:]  # [d_c, heads, d_n] each
            c, kp = cache[f"c{l}"], cache["k_pe"]  # [t, d_c], [t, d_r]
            heads = slice(first, first + count)
            q_abs = torch.einsum("igp,gp->gi", w_uk, q_nope[0, heads])  # W_UK^T q_nope: [heads, d_c]
            scores = (q_pe[0, heads] @ kp.t() + q_abs @ c.t()) * s.softmax_scale  # [heads, t]
            z = torch.softmax(scores, -1) @ c  # [heads, d_c]
            o[heads] += s.out_scale * torch.einsum("igp,gi->gp", w_uv, z)
        return ref.finish_attention(lw, x, o.reshape(1, -1))
