#!/usr/bin/python3
"""Writes tests/data/tiny/<variant>/: a random-weight tiny model of each of the 19 variants, saved
as GPT.save_pretrained(safe_serialization=False) would (models/VARIANTS.md 3.2/3.3), plus golden
logits from the float64 reference (scripts/reference_model.py) that the C++ tests compare against.
Deterministic (fixed seeds). Weights are fp32 holding bf16-representable values, so a bf16 load
is lossless. Run: /usr/bin/python3 scripts/make_tiny_checkpoints.py [variant ...]
"""
import collections
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as rm  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tiny")
kSeed = 20260115
kPromptLengths = (1, 7, 23)
kGreedyPrompt = 1
kGreedyTokens = 32

# Same structure as the 2.9B models (n_head 24, 4 latents, 6 KV heads) at tiny widths.
kCommon = {"n_layer": 2, "n_head": 24, "n_embd": 192, "intermediate_size": 64, "vocab_size": 512,
           "block_size": 256, "bias": False, "dropout": 0.0}
kFamily = {
    "mha": {"head_dim": 8},
    "gqa": {"head_dim": 8, "group_size": 4},
    "mqa": {"head_dim": 8, "group_size": 24},
    "gta": {"head_dim": 8, "group_size": 4},
    "mfa": {"head_dim": 16, "share_q_dim": 64},
    "tpa": {"head_dim": 8, "rank": 2, "q_rank": 6},
    "mla": {"q_lora_rank": 64, "qk_rope_head_dim": 4, "kv_lora_rank": 32, "qk_nope_head_dim": 8},
}
kLatent = {"q_lora_rank": 48, "qk_rope_head_dim": 4, "kv_lora_rank": 32, "qk_nope_head_dim": 8}
kHfFields = {"model_type": "gpt2", "architectures": ["GPT"], "torch_dtype": "float32",
             "transformers_version": "4.51.3"}


def make_config(variant):
    kind = rm.VARIANTS[variant][0]
    family = kFamily.get(kind, kLatent)
    return dict(kCommon, **family, **kHfFields)


def init_std(name, shape):
    """Std keeping activations O(1): 1/sqrt(fan_in), damped on the up-projections that q_scale /
    kv_scale amplify, so attention scores stay in a non-saturated range."""
    fan_in = shape[-2] if name.endswith("kv_b_proj") else shape[-1]
    std = fan_in ** -0.5
    if "kv_b_proj" in name or "q_b_proj" in name:
        std *= 0.4
    return std


def make_state_dict(spec, seed):
    gen = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()
    for name, shape in rm.expected_tensors(spec):
        if name == "lm_head.weight":
            sd[name] = sd["transformer.wte.weight"]  # one storage, as GPT ties them
            continue
        if name.endswith("layernorm.weight") or "layernorm_" in name or "layernorms." in name:
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name == "transformer.wte.weight":
            t = 0.1 * torch.randn(shape, generator=gen)  # small: else greedy repeats the input
        else:
            t = init_std(name, shape) * torch.randn(shape, generator=gen)
        sd[name] = t.to(torch.bfloat16).to(torch.float32).contiguous()
    return sd


def split_shards(sd, max_shard_size):
    """huggingface_hub's splitter: state_dict order, a new shard when the next tensor would exceed
    max_shard_size, tied tensors (same storage) placed in the shard of their first key."""
    shards, current, current_size, total, tied = [], collections.OrderedDict(), 0, 0, {}
    for name, t in sd.items():
        sid = t.storage().data_ptr()
        if sid in tied:
            tied[sid].append(name)
            continue
        tied[sid] = [name]
        size = t.numel() * t.element_size()
        if size > max_shard_size:
            shards.append(collections.OrderedDict([(name, t)]))
            total += size
            continue
        if current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = collections.OrderedDict(), 0
        current[name] = t
        current_size += size
        total += size
    if current:
        shards.append(current)
    for names in tied.values():
        for shard in shards:
            if names[0] in shard:
                for n in names[1:]:
                    shard[n] = sd[n]
                break
    return shards, total


# Most variants are stored in bf16 (their values are exact in bf16, so the goldens are the same)
# to keep the repository small; these stay float32 so both storage types are exercised.
kFloat32Variants = {"mlra4", "mla", "gqa", "mha"}


def save_pretrained(folder, config, sd, dtype=torch.float32):
    os.makedirs(folder, exist_ok=True)
    config = dict(config, torch_dtype="float32" if dtype == torch.float32 else "bfloat16")
    sd = {n: t.to(dtype) for n, t in sd.items()}
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # keep the tie: one storage
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    unique = sum(t.numel() * t.element_size() for n, t in sd.items() if n != "lm_head.weight")
    shards, total = split_shards(sd, int(unique * 0.45))
    assert total == unique and 2 <= len(shards) <= 3, (total, unique, len(shards))
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, os.path.join(folder, fname))
        weight_map.update({n: fname for n in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return len(shards)


def greedy(ref, prompt, n):
    """Greedy continuation by repeated full forward; returns tokens and top-1 minus top-2 margins."""
    ids, margins = list(prompt), []
    for _ in range(n):
        top = ref.forward(ids)[-1].topk(2)
        ids.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
    return ids[len(prompt):], margins


def write_golden(folder, ref, prompts):
    gdir = os.path.join(folder, "golden")
    os.makedirs(gdir, exist_ok=True)
    entries = []
    for i, p in enumerate(prompts):
        logits = ref.forward(p)
        fname = f"logits_{i}.bin"
        logits.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(gdir, fname))
        entries.append({"tokens": p, "logits_file": fname, "shape": list(logits.shape),
                        "max_abs_logit": float(logits.abs().max())})
    tokens, margins = greedy(ref, prompts[kGreedyPrompt], kGreedyTokens)
    golden = {
        "about": "float64 reference (scripts/reference_model.py) logits, full-prefix forward at "
                 "positions 0..T-1; files are float32 little-endian, row-major [T, vocab_size]",
        "dtype": "float32", "byte_order": "little",
        "prompts": entries,
        "greedy": {"prompt_index": kGreedyPrompt, "new_tokens": kGreedyTokens, "tokens": tokens,
                   "top2_margins": margins, "min_top2_margin": min(margins),
                   "note": "argmax over the whole vocab (text_vocab_size = vocab_size = 512)"},
    }
    with open(os.path.join(gdir, "golden.json"), "w") as f:
        f.write(json.dumps(golden, indent=1) + "\n")


def make_prompts():
    gen = torch.Generator().manual_seed(kSeed)
    return [torch.randint(0, kCommon["vocab_size"], (n,), generator=gen).tolist() for n in kPromptLengths]


def main(names):
    prompts = make_prompts()
    for k, variant in enumerate(rm.VARIANTS):
        if names and variant not in names:
            continue
        config = make_config(variant)
        spec = rm.Spec(config, variant)
        sd = make_state_dict(spec, kSeed + 1 + k)
        folder = os.path.join(ROOT, variant)
        n = save_pretrained(folder, config, sd,
                            torch.float32 if variant in kFloat32Variants else torch.bfloat16)
        ref = rm.Reference(spec, {name: t.to(torch.float64) for name, t in sd.items()})
        write_golden(folder, ref, prompts)
        print(f"{variant:16s} {len(sd):3d} keys, {n} shards")


if __name__ == "__main__":
    main(sys.argv[1:])
