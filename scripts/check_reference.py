#!/usr/bin/python3
"""Self-checks of the float64 reference (scripts/reference_model.py) on the tiny checkpoints in
tests/data/tiny (run scripts/make_tiny_checkpoints.py first). Not part of ctest; a few seconds.
 (a) incremental decode with the section-4 caches (absorbed latent form, models/VARIANTS.md
     5.4) equals the full-prefix forward at every position, all 19 variants (rel err < 1e-10);
 (b) simulated tensor parallelism for the latent variants (models/VARIANTS.md 6.1/6.2): per-rank
     partial attention and MLP outputs, computed only from that rank's weight slices, summed (the
     all-reduce) give the full logits at TP 2, 4 and 8; each (latent, head) pair on one rank;
 (c) the stored golden logits still equal the reference (to float32 rounding).
Run: /usr/bin/python3 scripts/check_reference.py
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as rm  # noqa: E402
from reference_model import attend, rms_norm, rope  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tiny")
kDecodeTol = 1e-10
kTpTol = 1e-10


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def check_decode(ref, ids):
    full = ref.forward(ids)
    dec = rm.Decoder(ref)
    steps = torch.stack([dec.step(t) for t in ids])
    return rel_err(steps, full)


# ------------------------------------------------------------------------------- TP simulation
def tp_plan(spec, tp):
    """Per rank: list of (latent l, [query heads]) it owns (models/VARIANTS.md 6.1 table and 6.2).
    Units are ordered by (first head, latent) so that MLRA-2 at TP=2 gives rank r latents {r, r+2}
    (pure head split); with more ranks than latents each latent's heads are split in blocks."""
    units = sorted(spec.latent_units(), key=lambda u: (u[1], u[0]))
    n = len(units)
    if tp <= n:
        per = n // tp
        return [[(l, list(range(f, f + c))) for l, f, c in units[r * per:(r + 1) * per]]
                for r in range(tp)]
    split = tp // n
    plan = []
    for r in range(tp):
        l, f, c = units[r // split]
        block = c // split
        start = f + (r % split) * block
        plan.append([(l, list(range(start, start + block)))])
    return plan


def rank_attention(ref, lw, x, pos, owned):
    """One rank's partial c_proj output [T, d], from its slices of the weights only."""
    s, t = ref.s, x.shape[0]
    dq = s.dn + s.dr
    heads = sorted({h for _, hs in owned for h in hs})
    col = {h: i for i, h in enumerate(heads)}
    # Replicated q_a path; q_b rows of the local heads only.
    cq = rms_norm(x @ lw["attn.q_a_proj.weight"].t(), lw["attn.q_a_layernorm.weight"]) * s.q_scale
    w_qb = lw["attn.q_b_proj.weight"].view(s.n_head, dq, s.r_q)[heads]
    q = (cq @ w_qb.reshape(-1, s.r_q).t()).view(t, len(heads), dq)
    q = torch.cat([q[..., :s.dn], rope(q[..., s.dn:], pos)], -1)
    w_kva = lw["attn.kv_a_proj_with_mqa.weight"]
    k_pe = rope(x @ w_kva[s.r_kv:].t(), pos)  # k_pe rows are on every rank
    o = torch.zeros(t, len(heads), s.dn, dtype=x.dtype)
    units = {l: (f, c) for l, f, c in s.latent_units()}
    for l, hs in owned:
        c_l = rms_norm(x @ w_kva[l * s.dc:(l + 1) * s.dc].t(), lw[s.latent_norm_name(l)]) * s.kv_scale
        first, count = units[l]
        p = s.up_proj(lw, l).view(s.dc, count, 2 * s.dn)[:, [h - first for h in hs]]
        kv = (c_l @ p.reshape(s.dc, -1)).view(t, len(hs), 2 * s.dn)
        k = torch.cat([kv[..., :s.dn], k_pe[:, None, :].expand(-1, len(hs), -1)], -1)
        idx = [col[h] for h in hs]
        o[:, idx] += s.out_scale * attend(q[:, idx], k, kv[..., s.dn:], s.softmax_scale, True)
    o = o.reshape(t, -1)
    if s.gated:
        w_g = lw["attn.gated_proj.weight"].view(s.n_head, s.dn, s.d)[heads].reshape(-1, s.d)
        o = torch.sigmoid(x @ w_g.t()) * o
    w_o = lw["attn.c_proj.weight"].view(s.d, s.n_head, s.dn)[:, heads].reshape(s.d, -1)
    return o @ w_o.t()


def rank_mlp(ref, lw, x, rank, tp):
    ff = ref.s.ff // tp
    rows = slice(rank * ff, (rank + 1) * ff)
    a = x @ lw["mlp.c_fc1.weight"][rows].t()
    b = x @ lw["mlp.c_fc2.weight"][rows].t()
    return (torch.nn.functional.silu(a) * b) @ lw["mlp.c_proj.weight"][:, rows].t()


def tp_forward(ref, ids, plan):
    pos = torch.arange(len(ids))
    x = ref.emb[torch.tensor(ids)]
    for lw in ref.layers:
        h = rms_norm(x, lw["input_layernorm.weight"])
        u = x + sum(rank_attention(ref, lw, h, pos, owned) for owned in plan)
        m = rms_norm(u, lw["post_attention_layernorm.weight"])
        x = u + sum(rank_mlp(ref, lw, m, r, len(plan)) for r in range(len(plan)))
    return ref.head(x)


def check_tp(ref, ids, tp):
    plan = tp_plan(ref.s, tp)
    pairs = [(l, h) for owned in plan for l, hs in owned for h in hs]
    expected = [(l, f + g) for l, f, c in ref.s.latent_units() for g in range(c)]
    assert sorted(pairs) == sorted(expected), "TP plan does not cover each (latent, head) once"
    cache = max(len(owned) * ref.s.dc + ref.s.dr for owned in plan)
    return rel_err(tp_forward(ref, ids, plan), ref.forward(ids)), cache


def check_golden(ref, folder):
    gdir = os.path.join(folder, "golden")
    with open(os.path.join(gdir, "golden.json")) as f:
        golden = json.load(f)
    worst = 0.0
    for p in golden["prompts"]:
        stored = np.fromfile(os.path.join(gdir, p["logits_file"]), dtype="<f4").reshape(p["shape"])
        worst = max(worst, rel_err(torch.from_numpy(stored).double(), ref.forward(p["tokens"])))
    return worst


def main():
    ids = torch.randint(0, 512, (13,), generator=torch.Generator().manual_seed(7)).tolist()
    failures = []
    print(f"{'variant':16s} {'decode rel err':>15s} {'golden rel err':>15s}   "
          "TP=2 / TP=4 / TP=8 rel err (cache per rank)")
    for variant in rm.VARIANTS:
        config, sd = rm.load_checkpoint(os.path.join(ROOT, variant))
        ref = rm.Reference(rm.Spec(config, variant), sd)
        dec = check_decode(ref, ids)
        gold = check_golden(ref, os.path.join(ROOT, variant))
        if dec > kDecodeTol:
            failures.append(f"{variant} decode {dec:.2e}")
        if gold > 1e-6:
            failures.append(f"{variant} golden {gold:.2e}")
        line = f"{variant:16s} {dec:15.2e} {gold:15.2e}  "
        if ref.s.latent:
            cells = []
            for tp in (2, 4, 8):
                err, cache = check_tp(ref, ids, tp)
                if err > kTpTol:
                    failures.append(f"{variant} TP={tp} {err:.2e}")
                cells.append(f"{err:.1e} ({cache})")
            line += " " + " / ".join(cells)
        print(line)
    if failures:
        print("FAILED:", "; ".join(failures))
        sys.exit(1)
    print(f"all checks passed (decode and TP tolerance {kDecodeTol:g}, golden 1e-6)")


if __name__ == "__main__":
    main()
