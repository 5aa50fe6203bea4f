#!/usr/bin/env python3
"""Trains a small MLRA-4 / MLA / GQA model (scripts/small_gpt.py) on the default corpus
(scripts/prepare_corpus.sh), evaluates held-out perplexity like eval_ppl.py, samples a few
continuations and saves the model exactly as the release does (models/VARIANTS.md 3.2/3.3):
config.json + pytorch_model.bin or HF-style shards + index, tied wte/lm_head in one storage.
Invariant: the perplexity reported is that of the saved weights (rounded to the stored dtype).
Runs on torch 1.13 CPU (smoke tests) and torch 2.x CUDA (bf16 autocast)."""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from small_gpt import GPT, kVariants  # noqa: E402

kMagic = 20240520
kHeaderInts = 256
kTextVocab = 50257  # rows >= this are padding, never targets
kEot = 50256


def load_tokens(path):
    header = np.fromfile(path, dtype=np.int32, count=kHeaderInts)
    if header[0] != kMagic or header[1] != 1:
        raise ValueError(f"{path}: bad token-file header {header[:3]}")
    tokens = np.memmap(path, dtype=np.uint16, mode="r", offset=kHeaderInts * 4)
    if len(tokens) != header[2]:
        raise ValueError(f"{path}: header says {header[2]} tokens, file has {len(tokens)}")
    return tokens


def model_config(args, variant):
    """GPTConfig fields as the release's train_<family>.py passes them (models/VARIANTS.md 2.1)."""
    cfg = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
               block_size=args.block_size, bias=False, vocab_size=50304, dropout=args.dropout)
    head = args.n_embd // args.n_head
    if variant == "gqa":
        cfg.update(intermediate_size=args.gqa_intermediate, head_dim=head,
                   group_size=args.group_size)
    else:
        # MLA gets the same total latent width as MLRA-4 (4 * d_c); both then have equal counts.
        cfg.update(intermediate_size=args.intermediate, q_lora_rank=args.q_lora_rank,
                   qk_rope_head_dim=args.rope_dim, kv_lora_rank=4 * head, qk_nope_head_dim=head)
    return cfg


def config_json(cfg, dtype):
    out = dict(cfg)
    out.update(model_type="gpt2", architectures=["GPT"], transformers_version="4.51.3",
               torch_dtype={torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype])
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


def split_shards(state, max_bytes):
    """huggingface_hub's split: tensors in state_dict order; an oversized tensor gets a shard of
    its own; tensors sharing storage (the tied pair) are stored in the first one's shard."""
    shards, cur, cur_size, total, seen = [], {}, 0, 0, {}
    for key, t in state.items():
        sid = (t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()).data_ptr()
        if sid in seen:
            seen[sid].append(key)
            continue
        seen[sid] = [key]
        size = t.numel() * t.element_size()
        total += size
        if size > max_bytes:
            shards.append({key: t})
            continue
        if cur_size + size > max_bytes:
            shards.append(cur)
            cur, cur_size = {}, 0
        cur[key] = t
        cur_size += size
    if cur:
        shards.append(cur)
    for keys in seen.values():
        for shard in shards:
            if keys[0] in shard:
                for k in keys[1:]:
                    shard[k] = state[k]
                break
    return shards, total


def save_release_format(model, out_dir, dtype, max_shard_bytes):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(config_json(model.cfg, dtype))
    tied = model.lm_head.weight.detach().to("cpu", dtype).contiguous()
    state = {}
    for k, v in model.state_dict().items():
        if k in ("transformer.wte.weight", "lm_head.weight"):
            state[k] = tied
        else:
            state[k] = v.detach().to("cpu", dtype).contiguous()
    shards, total = split_shards(state, max_shard_bytes)
    if len(shards) == 1:
        torch.save(shards[0], os.path.join(out_dir, "pytorch_model.bin"))
        return ["config.json", "pytorch_model.bin"]
    names, weight_map = [], {}
    for i, shard in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        # Same key order as the full state_dict inside each shard.
        torch.save({k: shard[k] for k in state if k in shard}, os.path.join(out_dir, name))
        names.append(name)
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(out_dir, "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return ["config.json", "pytorch_model.bin.index.json"] + names


def autocast(device, enabled):
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


@torch.no_grad()
def evaluate(model, tokens, block, batch, device, bf16, max_windows=0):
    """Cross-entropy over every position of the contiguous, non-overlapping windows
    x = data[s:s+T], y = data[s+1:s+T+1] (eval_ppl.py), token-weighted; also with the padded
    rows >= 50257 masked out of the softmax."""
    model.eval()
    starts = list(range(0, len(tokens) - block - 1 + 1, block))
    if max_windows > 0:
        starts = starts[:max_windows]
    nll, nll_masked, count = 0.0, 0.0, 0
    for i in range(0, len(starts), batch):
        rows = [np.asarray(tokens[s : s + block + 1], dtype=np.int64) for s in starts[i : i + batch]]
        xy = torch.from_numpy(np.stack(rows)).to(device)
        x, y = xy[:, :-1], xy[:, 1:]
        with autocast(device, bf16):
            logits = model(x)
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="sum").item()
        logits[..., kTextVocab:] = float("-inf")
        nll_masked += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                      reduction="sum").item()
        count += y.numel()
    model.train()
    return dict(windows=len(starts), tokens=count, loss=nll / count, ppl=math.exp(nll / count),
                loss_masked=nll_masked / count, ppl_masked=math.exp(nll_masked / count))


def decode(ids, encoder_json):
    inv = {v: k for k, v in json.load(open(encoder_json)).items()}
    # GPT-2's byte-to-unicode table, inverted.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    text = "".join(inv.get(i, "") for i in ids)
    return bytes(byte_of[ch] for ch in text).decode("utf-8", errors="replace")


@torch.no_grad()
def sample(model, prompt, n_new, device, bf16, temperature=0.8, top_k=40, seed=0):
    """Full re-forward per token (tiny model); padded rows never sampled."""
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = list(prompt)
    for _ in range(n_new):
        x = torch.tensor([ids[-model.cfg["block_size"] :]], device=device)
        with autocast(device, bf16):
            logits = model(x)[0, -1].float().cpu()
        logits[kTextVocab:] = float("-inf")
        v, ix = torch.topk(logits / temperature, top_k)
        nxt = ix[torch.multinomial(torch.softmax(v, -1), 1, generator=g)].item()
        if nxt == kEot:
            break
        ids.append(nxt)
    model.train()
    return ids[len(prompt) :]


def train_one(args, variant, device, log):
    torch.manual_seed(args.seed)
    cfg = model_config(args, variant)
    model = GPT(cfg, variant, dropout=args.dropout).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[{variant}] config {json.dumps(cfg)}; parameters {n_params:,} (tied embedding once)")
    train, val = load_tokens(args.train_bin), load_tokens(args.val_bin)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    total = [args.steps]  # may shrink once, after calibrating the step time
    warmup = min(args.warmup, max(1, args.steps // 10))

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        frac = min(1.0, (step - warmup) / max(1, total[0] - warmup))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))

    rng = np.random.default_rng(args.seed)
    bf16 = device.type == "cuda"
    T, B = args.block_size, args.batch_size
    t0, step, calib_at = time.time(), 0, 30
    # The corpus is small (about 2M tokens), so many epochs overfit: keep the weights with the
    # best loss on the first held-out windows, checked every --select-every steps.
    best = dict(loss=float("inf"), step=0, state=None)
    while step < total[0]:
        starts = rng.integers(0, len(train) - T - 1, size=B)
        xy = torch.from_numpy(np.stack([np.asarray(train[s : s + T + 1], dtype=np.int64) for s in starts]))
        xy = xy.to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with autocast(device, bf16):
            logits = model(xy[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == calib_at and args.time_budget_s > 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_step = (time.time() - t0) / step
            total[0] = max(calib_at + 1, min(args.steps, int(args.time_budget_s / per_step)))
            log(f"[{variant}] {per_step * 1000:.1f} ms/step -> {total[0]} steps in the budget")
        if args.select_every > 0 and (step % args.select_every == 0 or step == total[0]):
            sel = evaluate(model, val, T, args.eval_batch, device, bf16, args.select_windows)
            if sel["loss"] < best["loss"]:
                best = dict(loss=sel["loss"], step=step,
                            state={k: v.detach().clone() for k, v in model.state_dict().items()})
            log(f"[{variant}] step {step} selection loss {sel['loss']:.4f} (best {best['loss']:.4f} "
                f"at step {best['step']})")
        if step % args.log_every == 0 or step == total[0]:
            log(f"[{variant}] step {step}/{total[0]} loss {loss.item():.4f} lr {lr_at(step - 1):.2e} "
                f"{time.time() - t0:.0f}s")
    train_s = time.time() - t0
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    # Evaluate what is saved: weights rounded to the storage dtype.
    dtype = torch.bfloat16 if args.save_dtype == "bfloat16" else torch.float32
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    metrics = dict(variant=variant, parameters=n_params, steps=total[0], kept_step=best["step"] or total[0],
                   selection_windows=args.select_windows, train_seconds=round(train_s, 1),
                   tokens_seen=total[0] * B * T, batch_size=B, block_size=T, lr=args.lr,
                   device=str(torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"),
                   torch=torch.__version__, save_dtype=args.save_dtype,
                   eval_fp32=evaluate(model, val, T, args.eval_batch, device, False, args.eval_max_windows))
    if bf16:
        metrics["eval_bf16_autocast"] = evaluate(model, val, T, args.eval_batch, device, True, args.eval_max_windows)
    log(f"[{variant}] held-out {json.dumps(metrics['eval_fp32'])}")
    samples = []
    if args.prompts and os.path.exists(args.prompts):
        for i, p in enumerate(json.load(open(args.prompts))):
            ids = sample(model, p["tokens"], args.sample_tokens, device, bf16, seed=args.seed + i)
            text = decode(ids, args.encoder_json) if os.path.exists(args.encoder_json) else str(ids)
            samples.append(dict(prompt=p["text"], continuation=text))
            log(f"[{variant}] SAMPLE {p['text']!r} -> {text!r}")
    metrics["samples"] = samples
    out_dir = os.path.join(args.out_dir, variant)
    files = save_release_format(model, out_dir, dtype, args.max_shard_mb * 1000 * 1000)
    with open(os.path.join(out_dir, "training_metrics.json"), "w") as f:
        f.write(json.dumps(metrics, indent=2) + "\n")
    log(f"[{variant}] saved {files} to {out_dir}")
    return model, metrics


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(here, "..", ".device", "train")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--variants", default="mlra_4,mla,gqa")
    ap.add_argument("--train-bin", default=os.path.join(data, "train.bin"))
    ap.add_argument("--val-bin", default=os.path.join(data, "val.bin"))
    ap.add_argument("--prompts", default=os.path.join(data, "prompts.json"))
    ap.add_argument("--encoder-json", default=os.path.join(data, "gpt2_encoder.json"))
    ap.add_argument("--out-dir", required=True, help="one folder per variant is written here")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=192)
    ap.add_argument("--rope-dim", type=int, default=32, help="qk_rope_head_dim (latent family)")
    ap.add_argument("--q-lora-rank", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=512, help="MLRA-4 and MLA")
    ap.add_argument("--gqa-intermediate", type=int, default=704, help="matches the latent models' size")
    ap.add_argument("--group-size", type=int, default=2, help="GQA query heads per KV head")
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4000, help="upper bound on optimizer steps")
    ap.add_argument("--time-budget-s", type=float, default=0, help="per model; 0 = run --steps")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1, help="residual dropout, training only")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--select-every", type=int, default=200, help="0 = keep the last weights")
    ap.add_argument("--select-windows", type=int, default=64, help="held-out windows for selection")
    ap.add_argument("--eval-max-windows", type=int, default=0, help="0 = the whole held-out file")
    ap.add_argument("--sample-tokens", type=int, default=60)
    ap.add_argument("--save-dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--max-shard-mb", type=float, default=16, help="decimal MB, as HF counts")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    os.makedirs(args.out_dir, exist_ok=True)
    log_f = open(os.path.join(args.out_dir, "train.log"), "a")

    def log(msg):
        print(msg, flush=True)
        log_f.write(msg + "\n")
        log_f.flush()

    summary = {}
    for variant in args.variants.split(","):
        if variant not in kVariants:
            raise SystemExit(f"unknown variant {variant}; choose from {kVariants}")
        _, m = train_one(args, variant, device, log)
        summary[variant] = {k: m[k] for k in ("parameters", "steps", "kept_step", "train_seconds",
                                               "eval_fp32")}
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    log(json.dumps(summary))


if __name__ == "__main__":
    main()
