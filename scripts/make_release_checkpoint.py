#!/usr/bin/env python3
"""Writes a random-weight checkpoint at the real size in the release's exact format: config.json
(GPTConfig fields + HF keys), pytorch_model-0000N-of-0000M.bin shards split as save_pretrained
does (5 GB shards) and pytorch_model.bin.index.json, with the tied transformer.wte / lm_head pair.
For load-time, memory and speed measurements of the 2.9B configs where the real weights
cannot be downloaded. Weights are drawn on the GPU when there is one (fast), with the
same init scale rule as the tiny checkpoints so activations stay O(1).

  python3 scripts/make_release_checkpoint.py --config configs/2.9b/mlra_4/config.json \
      --variant mlra4 --out /tmp/ckpt/mlra4 [--dtype float32|bfloat16] [--seed 1]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tiny_checkpoints as tiny  # noqa: E402
import reference_model as rm  # noqa: E402

kShardBytes = 5 * 10**9  # save_pretrained's default max_shard_size "5GB"


def random_state_dict(spec, seed, dtype, device):
    gen = torch.Generator(device=device).manual_seed(seed)
    sd = {}
    for name, shape in rm.expected_tensors(spec):
        if name == "lm_head.weight":
            sd[name] = sd["transformer.wte.weight"]  # tied: one storage, as in the release
            continue
        t = torch.randn(shape, generator=gen, dtype=torch.float32, device=device)
        if "layernorm" in name:
            t.mul_(0.1).add_(1.0)
        else:
            t.mul_(0.1 if name == "transformer.wte.weight" else tiny.init_std(name, shape))
        sd[name] = t.to(dtype).cpu()
    return sd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a configs/2.9b/<variant>/config.json")
    ap.add_argument("--variant", required=True, choices=sorted(rm.VARIANTS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    with open(args.config) as f:
        config = json.load(f)
    spec = rm.Spec(config, args.variant)
    dtype = getattr(torch, args.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    sd = random_state_dict(spec, args.seed, dtype, device)
    t1 = time.time()
    os.makedirs(args.out, exist_ok=True)
    shards, total = tiny.split_shards(sd, kShardBytes)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, os.path.join(args.out, fname))
        weight_map.update({n: fname for n in shard})
    with open(os.path.join(args.out, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    out_config = dict(config, torch_dtype=args.dtype)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(out_config, f, indent=2)
    params = sum(t.numel() for n, t in sd.items() if n != "lm_head.weight")
    print(f"{args.variant}: {params / 1e9:.3f}B parameters, {total / 1e9:.2f} GB in {len(shards)} shards "
          f"({args.dtype}); drawn in {t1 - t0:.1f} s on {device}, written in {time.time() - t1:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
