#!/usr/bin/python3
"""Checks scripts/torch_decode_baseline.py's eager decode step on the CPU (ctest
torch_decode_baseline, label python; a few seconds on Debian's torch 1.13):
 (a) logits equal reference_model.Decoder's (float64, the spec) for every latent variant of
     tests/data/tiny at TP 1, and at TP 2, 4 and 8 with every rank's share computed alone and the
     attention and MLP partials summed per layer (the all-reduce): three sequences in one batch,
     each at its own position (staggered starts), in a cache longer than the sequences (masking);
     float64: relative error 1e-10 (the reference's own decode-vs-forward bound in
     check_reference.py: same math, different summation order only, ~1e-15 here). The float32
     step of MLRA-4 and MLA at TP 1 and 4: 1e-4 (float32 rounding through two layers is ~1e-6;
     a wrong scale, head or latent moves logits by percent);
 (b) each rank's units are check_reference.py's simulated plan (models/shard_plan.cpp's rule) and
     a TP degree the plan refuses is refused;
 (c) the roofline's byte counts for the 2.9B configs, from the model built on the meta device: at
     TP 1 the weights are the parameter counts of models/VARIANTS.md 2.2 (two bytes each), and
     the cache row per rank at TP 1/2/4/8 is the table of 6.2.
Run: /usr/bin/python3 tests/check_torch_decode_baseline.py
"""
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import check_reference  # noqa: E402
import reference_model as rm  # noqa: E402
import torch_decode_baseline as tb  # noqa: E402

kTiny = os.path.join(ROOT, "tests", "data", "tiny")
kF64Tol = 1e-10
kF32Tol = 1e-4
kSteps = 9
kStarts = (0, 2, 5)  # sequence b feeds its token 0 at position 0 until step kStarts[b]
kCapacity = 16  # cache rows per sequence: more than kSteps, so rows past a position are masked

# models/VARIANTS.md 2.2 (parameters, tied embedding once) and 6.2 (cache per rank, TP 1/2/4/8).
kParams = {"mla": 2872052736, "gla_2": 2872630272, "gla_4": 2873220096, "mlra_2": 2872630272,
           "mlra_4": 2873220096}
kCacheWidths = {"mla": (576, 576, 576, 576), "gla_2": (576, 320, 320, 320),
                "gla_4": (576, 320, 192, 192), "mlra_2": (576, 320, 192, 192),
                "mlra_4": (576, 320, 192, 192)}


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def reference_logits(ref, ids):
    """Decoder logits [batch, steps, vocab]: sequence b at step t is at position t - start_b
    (position 0, its first token, while t < start_b)."""
    out = []
    for b, row in enumerate(ids):
        dec = rm.Decoder(ref)
        per_pos = [dec.step(int(tok)) for tok in row[:kSteps - kStarts[b]]]
        out.append(torch.stack([per_pos[max(0, t - kStarts[b])] for t in range(kSteps)]))
    return torch.stack(out)


def baseline_err(spec, sd, tp, dtype, ids, expected):
    ranks = [tb.RankDecoder(spec, lambda n: sd[n], tp, r, dtype) for r in range(tp)]
    for r in ranks:
        r.allocate_cache(len(ids), kCapacity)
    worst = 0.0
    for t in range(kSteps):
        pos = torch.tensor([max(0, t - s) for s in kStarts])
        tokens = torch.stack([ids[b, p] for b, p in enumerate(pos.tolist())])
        with torch.no_grad():
            logits = tb.decode_logits(ranks, tokens, pos)
        worst = max(worst, rel_err(logits.double(), expected[:, t]))
    return worst


def check_logits(failures):
    ids = torch.randint(0, 512, (len(kStarts), kSteps), generator=torch.Generator().manual_seed(3))
    for variant, (kind, _, _) in rm.VARIANTS.items():
        if kind not in rm.kLatentKinds:
            continue
        config, sd = rm.load_checkpoint(os.path.join(kTiny, variant))
        spec = rm.Spec(config, variant)
        expected = reference_logits(rm.Reference(spec, sd), ids)
        cells = []
        for tp in (1, 2, 4, 8):
            err = baseline_err(spec, sd, tp, torch.float64, ids, expected)
            cells.append(f"TP{tp} {err:.1e}")
            if not err <= kF64Tol:
                failures.append(f"{variant} TP {tp} float64: {err:.2e}")
        if variant in ("mlra4", "mla"):
            for tp in (1, 4):
                sd32 = {k: v.float() for k, v in sd.items()}
                err = baseline_err(spec, sd32, tp, torch.float32, ids, expected)
                cells.append(f"f32 TP{tp} {err:.1e}")
                if not err <= kF32Tol:
                    failures.append(f"{variant} TP {tp} float32: {err:.2e}")
        print(f"{variant:15s} " + "  ".join(cells))


def check_plans(failures):
    for variant, (kind, _, _) in rm.VARIANTS.items():
        if kind not in rm.kLatentKinds:
            continue
        config, _ = rm.load_checkpoint(os.path.join(kTiny, variant))
        spec = rm.Spec(config, variant)
        for tp in (1, 2, 4, 8):
            ours = [sorted((l, list(range(b, e))) for l, b, e in tb.rank_units(spec, tp, r))
                    for r in range(tp)]
            theirs = [sorted(owned) for owned in check_reference.tp_plan(spec, tp)]
            if ours != theirs:
                failures.append(f"{variant} TP {tp}: units {ours} != check_reference {theirs}")
    spec = tb.load_spec(tb.kConfigDir, "mlra_4")
    for tp, why in ((3, "not divisible by tp 3"), (6, "cannot be split"), (16, "intermediate")):
        try:
            tb.rank_units(spec, tp, 0)
            failures.append(f"mlra_4 TP {tp} was not refused")
        except ValueError as e:
            if why not in str(e):
                failures.append(f"mlra_4 TP {tp} refused for '{e}', expected '{why}'")


def check_bytes(failures):
    for name, params in kParams.items():
        spec = tb.load_spec(tb.kConfigDir, name)
        widths = []
        for tp in (1, 2, 4, 8):
            model = tb.RankDecoder(spec, tb.meta_source(spec), tp, 0, torch.bfloat16)
            widths.append(model.cache_width)
            if tp == 1 and model.weight_bytes() != 2 * params:
                failures.append(f"{name}: {model.weight_bytes()} weight bytes at TP 1, "
                                f"expected 2 x {params}")
            if model.cache_bytes(8, 1024) != 8 * 1024 * model.cache_width * 2 * spec.n_layer:
                failures.append(f"{name} TP {tp}: cache bytes not batch*ctx*row*2*layers")
        if tuple(widths) != kCacheWidths[name]:
            failures.append(f"{name}: cache rows {widths}, expected {kCacheWidths[name]}")


def main():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    failures = []
    check_logits(failures)
    check_plans(failures)
    check_bytes(failures)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"all checks passed (float64 {kF64Tol:g}, float32 {kF32Tol:g}; plans; 2.9B bytes)")


if __name__ == "__main__":
    main()
