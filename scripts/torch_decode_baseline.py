#!/usr/bin/python3
"""The plain-PyTorch decode step that mlra-bench decode is measured against (issue 19's
torch.compile baseline), for the latent variants of the 2.9B release (configs/2.9b/<variant>).

One rank's share at a TP degree (models/shard_plan.cpp's rule: latent units dealt to ranks, MLP
rows split; the all-reduce is left out, as mlra-bench decode leaves it out without the GPUs),
random weights seeded per tensor, and a static cache preallocated per layer as
[batch, context, row] with row = [each local latent | k_pe] (models/VARIANTS.md 5.2): contiguous
per sequence, not paged, so the comparison with the server includes paging. Every sequence holds
`context` tokens of random entries; the step decodes one token per sequence at position
context - 1, writes its row and attends over the whole sequence.

The step is written the way gpt-fast writes one: weights and caches are module buffers (static
addresses for CUDA graphs), the cache row is written with index_put_, every projection of the
layer input is one product ([q_a; local kv_a rows; k_pe rows; gate rows]), c_fc1 and c_fc2 are one
product, q_scale and kv_scale are folded into the norm weights, the residual stream stays float32
as in the server. Attention is absorbed (models/VARIANTS.md 5.4): q_nope through W_UK, scores over
the cached latent plus the rope key, softmax in float32, the latent-weighted sum up through W_UV.
It uses bmm, not scaled_dot_product_attention: the absorbed key is d_c + d_r wide and the value d_c
wide (flash needs them equal), and with several latents per rank the key [c_l | k_pe] is not
contiguous in the row, so SDPA would copy the cache every step or run its math path; bmm reads the
strided cache views in place and inductor fuses scale, mask and softmax between the two products.
A rank with one latent (MLA; MLRA-4, GLA-4 at TP 4) scores with one product over the whole row.

Timed: the eager step and torch.compile(mode="reduce-overhead", fullgraph=True) of it (CUDA graph
replays), both with CUDA events around each call after warm-up, median of --iters. The roofline
is mlra-bench decode's: (weight bytes + cache bytes read) / the device-to-device copy bandwidth
measured in this run (1 GiB, bytes read + written), where weight bytes are one copy of every weight
the rank reads (the server's count adds its W_UK^T copy under latent_uk_t and the padding of the
MLP's c_proj rows) and cache bytes are batch * context * row bytes * layers.

Run (GPU machine, PyTorch 2): python3 scripts/torch_decode_baseline.py --variants mlra_4 mla
  --tp 1 4 --batch 1 8 64 --context 1024 32768
Correctness: tests/check_torch_decode_baseline.py (ctest torch_decode_baseline) checks the eager
step against reference_model.Decoder on the tiny checkpoints.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as rm  # noqa: E402

kConfigDir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "2.9b")
kTextVocab = 50257  # GPT-2's ids; rows above are padding and never sampled (VARIANTS.md F7)
# configs/2.9b folder names that differ from reference_model's variant names.
kDirVariants = {"gla_2": "gla2", "gla_4": "gla4", "mlra_2": "mlra2", "mlra_4": "mlra4"}


def load_spec(config_dir, name):
    """configs/<name>/config.json as a reference_model.Spec of a latent variant."""
    variant = kDirVariants.get(name, name)
    if variant not in rm.VARIANTS:
        raise ValueError(f"unknown variant '{name}'")
    if rm.VARIANTS[variant][0] not in rm.kLatentKinds:
        raise ValueError(f"'{name}' is not a latent variant: only {', '.join(rm.kLatentKinds)} "
                         "(and their gated / no-scale siblings) are written here")
    path = os.path.join(config_dir, name, "config.json")
    with open(path) as f:
        return rm.Spec(json.load(f), variant)


# --------------------------------------------------------------------------- sharding (6.1, 6.2)
def latent_units(spec):
    """(latent, first head, end head) in models/shard_plan.cpp's order: by head group, then latent."""
    groups = {"gla2": 2, "gla4": 4, "mlra2": 2}.get(spec.kind, 1)
    h = spec.n_head
    return [(l, h // groups * g, h // groups * (g + 1))
            for g in range(groups) for l in range(g, spec.n_latent, groups)]


def rank_units(spec, tp, rank):
    """Rank `rank`'s units at TP `tp` (shard_plan.cpp deal_units); ValueError names a refused tp."""
    units = latent_units(spec)
    n = len(units)
    if tp < 1 or not 0 <= rank < tp:
        raise ValueError(f"rank {rank} outside tp {tp}")
    split = tp // n
    if tp <= n and n % tp:
        raise ValueError(f"{spec.variant} has {n} latent units, not divisible by tp {tp}")
    if tp > n and (tp % n or any((e - b) % split for _, b, e in units)):
        raise ValueError(f"{spec.variant}: {n} latent units cannot be split over tp {tp}")
    if spec.ff % tp:
        raise ValueError(f"intermediate_size {spec.ff} is not divisible by tp {tp}")
    if tp <= n:
        per = n // tp
        return units[rank * per:(rank + 1) * per]
    l, b, e = units[rank // split]
    block = (e - b) // split
    first = b + (rank % split) * block
    return [(l, first, first + block)]


# --------------------------------------------------------------------------- weight sources
class LayerView:
    """Layer i's tensors by their short names, as reference_model.Spec.up_proj expects."""

    def __init__(self, get, i):
        self.get, self.prefix = get, f"transformer.h.{i}."

    def __getitem__(self, key):
        return self.get(self.prefix + key)


def random_source(spec, seed, device):
    """name -> a seeded random tensor (float32) of the checkpoint's shape, made when asked for:
    matrices N(0, 1/fan_in), norm weights 1 + N(0, 0.1^2), so activations stay in range."""
    shapes = dict(rm.expected_tensors(spec))
    order = {name: i for i, name in enumerate(shapes)}

    def get(name):
        shape = shapes[name]
        g = torch.Generator(device=device)
        g.manual_seed(seed * 1_000_003 + order[name])
        t = torch.randn(shape, generator=g, device=device)
        if len(shape) == 1:
            return 1.0 + 0.1 * t
        fan_in = shape[1] if name.endswith("attn.kv_b_proj") else shape[-1]
        return t / math.sqrt(fan_in)
    return get


def meta_source(spec):
    """name -> an empty tensor on the meta device: shapes and byte counts without memory."""
    shapes = dict(rm.expected_tensors(spec))
    return lambda name: torch.empty(shapes[name], device="meta")


# --------------------------------------------------------------------------- the model
def rms(x, w, acc):
    """RMSNorm statistics in `acc` (float32, or float64 for the test), product in w's dtype."""
    x = x.to(acc)
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + rm.kNormEps) * w.to(acc)).to(w.dtype)


def rope(x, cos, sin):
    """Rotate-half RoPE of x [B, ..., n] with cos, sin [B, n/2] (acc dtype), in x's dtype."""
    half = x.shape[-1] // 2
    shape = [x.shape[0]] + [1] * (x.dim() - 2) + [half]
    cos, sin = cos.view(shape), sin.view(shape)
    x1, x2 = x[..., :half].to(cos.dtype), x[..., half:].to(cos.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).to(x.dtype)


class LatentLayer(nn.Module):
    """One layer's rank share: absorbed latent attention over the rank's units, its MLP rows."""

    def __init__(self, spec, units, lw, tp, rank, dtype):
        super().__init__()
        s = self.s = spec
        self.acc = torch.float64 if dtype == torch.float64 else torch.float32
        latents = sorted(l for l, _, _ in units)
        h0 = min(b for _, b, _ in units)
        self.n_heads = max(e for _, _, e in units) - h0
        self.n_lat, self.dc, self.dn, self.dr = len(latents), s.dc, s.dn, s.dr
        self.row = self.n_lat * s.dc + s.dr
        dq = s.dn + s.dr
        heads = slice(h0 * dq, (h0 + self.n_heads) * dq)
        cols = slice(h0 * s.dn, (h0 + self.n_heads) * s.dn)
        kv_a = lw["attn.kv_a_proj_with_mqa.weight"]
        x_rows = [lw["attn.q_a_proj.weight"]]
        x_rows += [kv_a[l * s.dc:(l + 1) * s.dc] for l in latents] + [kv_a[s.r_kv:]]
        if s.gated:
            x_rows.append(lw["attn.gated_proj.weight"][cols])
        # (unit's cache offset, local first head, heads, first virtual head) in unit order.
        self.units, w_uk, w_uv, head_of_v = [], [], [], []
        for l, b, e in units:
            _, first, count = s.latent_units()[l]
            p = s.up_proj(lw, l).reshape(s.dc, count, 2 * s.dn)[:, b - first:e - first]
            w_uk.append(p[..., :s.dn].permute(1, 2, 0))  # [n, d_n, d_c]: W_UK^{l,h}
            w_uv.append(p[..., s.dn:].permute(1, 0, 2))  # [n, d_c, d_n]: W_UV^{l,h} transposed
            self.units.append((latents.index(l) * s.dc, b - h0, e - b, len(head_of_v)))
            head_of_v += list(range(b - h0, e - h0))
        ff = slice(rank * s.ff // tp, (rank + 1) * s.ff // tp)
        norms = [lw[s.latent_norm_name(l)] * s.kv_scale for l in latents]
        weights = {
            "ln1": lw["input_layernorm.weight"], "ln2": lw["post_attention_layernorm.weight"],
            "w_x": torch.cat(x_rows), "q_a_norm": lw["attn.q_a_layernorm.weight"] * s.q_scale,
            "w_qb": lw["attn.q_b_proj.weight"][heads], "lat_norm": torch.stack(norms),
            "w_uk": torch.cat(w_uk), "w_uv": torch.cat(w_uv),
            "c_proj": lw["attn.c_proj.weight"][:, cols],
            "fc12": torch.cat([lw["mlp.c_fc1.weight"][ff], lw["mlp.c_fc2.weight"][ff]]),
            "proj": lw["mlp.c_proj.weight"][:, ff]}
        for name, w in weights.items():
            self.register_buffer(name, w.to(dtype).contiguous(), persistent=False)
        self.register_buffer("head_of_v", torch.tensor(head_of_v, device=self.w_x.device),
                             persistent=False)
        self.register_buffer("cache", None, persistent=False)

    def allocate_cache(self, batch, capacity):
        self.register_buffer("cache", torch.zeros(batch, capacity, self.row, dtype=self.w_x.dtype,
                                                  device=self.w_x.device), persistent=False)

    def attention(self, x, pos, cos, sin, valid):
        """x [B, d] (input_layernorm output) -> this rank's partial c_proj output [B, d] (acc)."""
        s, acc, bsz = self.s, self.acc, x.shape[0]
        y = x @ self.w_x.t()
        n_lat_rows = self.n_lat * self.dc
        cq = rms(y[:, :s.r_q], self.q_a_norm, acc)
        q = (cq @ self.w_qb.t()).view(bsz, self.n_heads, self.dn + self.dr)
        q_nope, q_pe = q[..., :self.dn], rope(q[..., self.dn:], cos, sin)
        lat = rms(y[:, s.r_q:s.r_q + n_lat_rows].reshape(bsz, self.n_lat, self.dc), self.lat_norm,
                  acc)
        k_pe = rope(y[:, s.r_q + n_lat_rows:s.r_q + n_lat_rows + self.dr], cos, sin)
        self.cache[torch.arange(bsz, device=x.device), pos] = torch.cat(
            [lat.reshape(bsz, n_lat_rows), k_pe], -1)
        # q~ = W_UK^T q_nope for every virtual head (latent, head) at once: [V, B, d_c].
        q_abs = torch.bmm(q_nope.index_select(1, self.head_of_v).transpose(0, 1), self.w_uk)
        cache = self.cache
        s_pe = None
        if self.n_lat > 1:  # the rope key's scores, shared by every latent of the rank
            s_pe = torch.bmm(q_pe, cache[..., n_lat_rows:].transpose(1, 2))
        z = []
        for off, h, n, v in self.units:
            c = cache[..., off:off + self.dc]  # [B, T, d_c], strided view of the cache
            if s_pe is None:  # one latent: the row is the key [c | k_pe]
                qk = torch.cat([q_abs[v:v + n].transpose(0, 1), q_pe[:, h:h + n]], -1)
                scores = torch.bmm(qk, cache.transpose(1, 2))
            else:
                scores = torch.bmm(q_abs[v:v + n].transpose(0, 1), c.transpose(1, 2)).to(acc)
                scores = scores + s_pe[:, h:h + n].to(acc)
            scores = scores.to(acc).mul(s.softmax_scale).masked_fill(~valid[:, None, :], -math.inf)
            z.append(torch.bmm(torch.softmax(scores, -1).to(c.dtype), c))  # [B, n, d_c]
        o_v = torch.bmm(torch.cat(z, 1).transpose(0, 1), self.w_uv)  # [V, B, d_n]
        o = torch.zeros(self.n_heads, bsz, self.dn, dtype=acc, device=x.device)
        for _, h, n, v in self.units:
            o[h:h + n] += o_v[v:v + n].to(acc)
        o = (o.transpose(0, 1).reshape(bsz, -1) * s.out_scale)
        if s.gated:
            o = o * torch.sigmoid(y[:, s.r_q + n_lat_rows + self.dr:].to(acc))
        return (o.to(x.dtype) @ self.c_proj.t()).to(acc)

    def mlp(self, x):
        """x [B, d] (post_attention_layernorm output) -> this rank's partial MLP output (acc)."""
        a, b = (x @ self.fc12.t()).chunk(2, -1)
        return ((torch.nn.functional.silu(a) * b) @ self.proj.t()).to(self.acc)


class RankDecoder(nn.Module):
    """One rank's share of the whole model for a decode step of `batch` sequences."""

    def __init__(self, spec, get, tp=1, rank=0, dtype=torch.bfloat16):
        super().__init__()
        self.s, self.tp, self.rank = spec, tp, rank
        self.acc = torch.float64 if dtype == torch.float64 else torch.float32
        units = rank_units(spec, tp, rank)
        self.layers = nn.ModuleList(
            LatentLayer(spec, units, LayerView(get, i), tp, rank, dtype) for i in range(spec.n_layer))
        self.register_buffer("emb", get("transformer.wte.weight").to(dtype).contiguous(),
                             persistent=False)
        self.register_buffer("final_norm", get("layernorm.weight").to(dtype), persistent=False)
        half = spec.dr // 2
        inv_freq = rm.kRopeBase ** (-2.0 * torch.arange(half, dtype=torch.float64) / spec.dr)
        self.register_buffer("inv_freq", inv_freq.to(self.emb.device, self.acc), persistent=False)
        self.cache_width = self.layers[0].row
        self.text_vocab = min(spec.vocab, kTextVocab)

    def allocate_cache(self, batch, capacity):
        for layer in self.layers:
            layer.allocate_cache(batch, capacity)
        self.register_buffer("positions", torch.arange(capacity, device=self.emb.device),
                             persistent=False)

    def fill_random_cache(self, seed):
        g = torch.Generator(device=self.emb.device)
        g.manual_seed(seed)
        for layer in self.layers:
            layer.cache.normal_(generator=g)

    def weight_bytes(self):
        return sum(b.numel() * b.element_size() for n, b in self.named_buffers()
                   if not n.endswith(("cache", "head_of_v", "inv_freq", "positions")))

    def cache_bytes(self, batch, context):
        return batch * context * self.cache_width * self.emb.element_size() * self.s.n_layer

    def forward(self, tokens, pos):
        return decode_logits([self], tokens, pos)


def decode_logits(ranks, tokens, pos):
    """One decode step of tokens [B] at positions pos [B] over the ranks of one TP group: each
    layer's attention and MLP partials are summed over the ranks (the all-reduce); a single rank
    is its share alone. Returns logits [B, vocab] in the weight dtype."""
    r0 = ranks[0]
    ang = pos.to(r0.acc)[:, None] * r0.inv_freq[None, :]
    cos, sin = ang.cos(), ang.sin()
    valid = r0.positions[None, :] <= pos[:, None]
    x = r0.emb[tokens].to(r0.acc)
    for i, layer in enumerate(r0.layers):
        h = rms(x, layer.ln1, r0.acc)
        for r in ranks:
            x = x + r.layers[i].attention(h, pos, cos, sin, valid)
        m = rms(x, layer.ln2, r0.acc)
        for r in ranks:
            x = x + r.layers[i].mlp(m)
    return rms(x, r0.final_norm, r0.acc) @ r0.emb.t()


class GreedyStep(nn.Module):
    """The timed step: logits, then the greedy token over the text rows (as the server samples)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, pos):
        return self.model(tokens, pos)[:, :self.model.text_vocab].argmax(-1)


# --------------------------------------------------------------------------- timing
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, iters, device, before=None):
    """Median time of fn() over `iters` calls after 5 warm-up calls: CUDA events on a GPU (each
    call's host work included, as a caller sees it), the wall clock elsewhere."""
    for _ in range(5):
        if before:
            before()
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        if before:
            before()
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def reset_compiled():
    """Drops compiled code and recorded CUDA graphs: each point compiles for its own shapes."""
    torch._dynamo.reset()
    import torch._inductor.cudagraph_trees as trees
    trees.reset_cudagraph_trees()


def time_compiled(step, tokens, pos, iters, device):
    """torch.compile(step, mode="reduce-overhead", fullgraph=True) timed as CUDA graph replays;
    also whether CUDA graphs were kept, how many greedy tokens equal the eager step's and the
    seconds the first call took (compilation)."""
    reset_compiled()
    counters = torch._dynamo.utils.counters
    counters.clear()
    # Weights and caches keep their addresses (the caches are written in place every step): CUDA
    # graphs replay over them instead of copying them in as inputs.
    for buf in step.buffers():
        torch._dynamo.mark_static_address(buf)
    fn = torch.compile(step, mode="reduce-overhead", fullgraph=True, dynamic=False)
    t0 = time.perf_counter()
    torch.compiler.cudagraph_mark_step_begin()
    fn(tokens, pos)
    sync(device)
    compile_s = time.perf_counter() - t0
    ms = median_ms(lambda: fn(tokens, pos), iters, device,
                   before=torch.compiler.cudagraph_mark_step_begin)
    torch.compiler.cudagraph_mark_step_begin()
    same = int((fn(tokens, pos).clone() == step(tokens, pos)).sum())
    graphs = "skipped" if counters["inductor"]["cudagraph_skips"] else "yes"
    fn = None
    reset_compiled()
    return ms, graphs, f"{same}/{tokens.numel()}", compile_s


def copy_bandwidth_gbs(device, n=1 << 30):
    """An n-byte (1 GiB) device-to-device copy: bytes read + written per second (mlra-bench's)."""
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 20, device)
    return 2.0 * n / (ms * 1e-3) / 1e9


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["mlra_4", "mla"],
                   help="configs/2.9b folder names (latent family): mla gla_2 gla_4 mlra_2 mlra_4")
    p.add_argument("--tp", nargs="+", type=int, default=[1, 4], help="TP degrees (rank 0's share)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8, 64])
    p.add_argument("--context", nargs="+", type=int, default=[1024, 32768])
    p.add_argument("--iters", type=int, default=50, help="timed steps per point")
    p.add_argument("--no-compile", action="store_true", help="time the eager step only")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    p.add_argument("--config-dir", default=kConfigDir)
    p.add_argument("--max-cache-gb", type=float, default=40.0, help="skip points with more cache")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--copy-bytes", type=int, default=1 << 30, help="size of the bandwidth copy")
    a = p.parse_args(argv)
    if min(a.batch) < 1 or min(a.context) < 1 or a.iters < 1:
        p.error("--batch, --context and --iters must be positive")
    return a


def main(argv=None):
    a = parse_args(argv)
    device = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    if not a.no_compile and not hasattr(torch, "compile"):
        sys.exit(f"torch {torch.__version__} has no torch.compile: run with --no-compile")
    torch.set_grad_enabled(False)
    try:
        specs = [(v, load_spec(a.config_dir, v)) for v in a.variants]
    except (ValueError, OSError) as e:
        sys.exit(f"torch_decode_baseline: {e}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    bw = copy_bandwidth_gbs(device, a.copy_bytes)
    print(f"torch {torch.__version__}, {name}, {a.dtype}; cache contiguous per sequence "
          f"[batch, context, row]; all-reduce excluded (one rank's share)")
    print(f"device-to-device copy bandwidth: {bw:.0f} GB/s")
    print(f"{'variant':<8} {'tp':>3} {'batch':>6} {'ctx':>6} {'eager_ms':>9} {'compiled_ms':>11} "
          f"{'speedup':>7} {'roof_ms':>8} {'x_roof':>7} {'weightGB':>8} {'cacheGB':>8} {'graphs':>7} "
          f"{'agree':>5} {'compile_s':>9}", flush=True)
    for v, spec in specs:
        for tp in a.tp:
            try:
                rank_units(spec, tp, 0)
            except ValueError as e:
                print(f"{v:<8} {tp:>3} skipped: {e}", flush=True)
                continue
            model = RankDecoder(spec, random_source(spec, a.seed, device), tp, 0, dtype)
            step = GreedyStep(model)
            for b in a.batch:
                for ctx in a.context:
                    cache_bytes = model.cache_bytes(b, ctx)
                    if cache_bytes > a.max_cache_gb * (1 << 30):
                        print(f"{v:<8} {tp:>3} {b:>6} {ctx:>6} skipped: cache "
                              f"{cache_bytes / 1e9:.1f} GB > --max-cache-gb", flush=True)
                        continue
                    model.allocate_cache(b, ctx)
                    model.fill_random_cache(a.seed + 1)
                    tokens = torch.randint(0, model.text_vocab, (b,), device=device)
                    pos = torch.full((b,), ctx - 1, dtype=torch.long, device=device)
                    eager = median_ms(lambda: step(tokens, pos), a.iters, device)
                    compiled, graphs, agree, compile_s = None, "-", "-", 0.0
                    if not a.no_compile:
                        compiled, graphs, agree, compile_s = time_compiled(step, tokens, pos,
                                                                           a.iters, device)
                    roof = (model.weight_bytes() + cache_bytes) / (bw * 1e9) * 1e3
                    best = compiled if compiled is not None else eager
                    cells = (f"{compiled:11.3f} {eager / compiled:7.2f}" if compiled is not None
                             else f"{'-':>11} {'-':>7}")
                    print(f"{v:<8} {tp:>3} {b:>6} {ctx:>6} {eager:9.3f} {cells} {roof:8.3f} "
                          f"{best / roof:7.2f} {model.weight_bytes() / 1e9:8.3f} "
                          f"{cache_bytes / 1e9:8.3f} {graphs:>7} {agree:>5} {compile_s:9.1f}", flush=True)
                    for layer in model.layers:
                        layer.cache = None
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            model = step = None  # frees the weights before the next model is made
    print("x_roof: compiled ms (eager with --no-compile) over the roofline; roof_ms = (weight + "
          "cache bytes) / copy bandwidth; graphs: whether inductor kept CUDA graphs (skipped: "
          "the compiled time has launch gaps); agree: rows whose compiled greedy token equals "
          "the eager one (bf16 rounding may flip a close pair)")


if __name__ == "__main__":
    main()
