#!/usr/bin/python3
"""Writes the small checkpoint fixtures of the [checkpoint] tests under tests/data/loader/.

Run with the system python (Debian python3-torch 1.13): /usr/bin/python3 scripts/make_loader_fixtures.py
Real torch.save output is used where torch can produce the case; other cases (torch 2.x archive
layout with aligned entries, Zip64 records, compressed entries, hostile pickles) are written by
the tiny zip / pickle emitters below, because torch 1.13 cannot produce them. Safetensors files
are written by hand (no safetensors package). Deterministic: fixed seeds, zero timestamps.
"""
import collections
import json
import os
import struct
import sys
import zlib

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "loader")


# ---------------------------------------------------------------- zip writer (stored entries)
def write_zip(path, entries, align=0, zip64=False, deflate=()):
    """entries: list of (name, bytes). align: pad local extra so data starts at a multiple.
    zip64: write every size/offset through Zip64 extra fields and the Zip64 EOCD records.
    deflate: names whose data is deflate-compressed (method 8)."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        nb = name.encode()
        crc = zlib.crc32(data)
        method = 8 if name in deflate else 0
        payload = zlib.compress(data)[2:-4] if method == 8 else data
        offset = len(out)
        local_extra = b""
        if zip64:
            local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(payload))
        if align:
            base = offset + 30 + len(nb) + len(local_extra) + 4
            pad = (-base) % align
            local_extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        size32 = 0xFFFFFFFF if zip64 else len(payload)
        usize32 = 0xFFFFFFFF if zip64 else len(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0, method, 0, 0, crc,
                           size32, usize32, len(nb), len(local_extra))
        out += nb + local_extra + payload
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(payload), offset) if zip64 else b""
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45 if zip64 else 20, 0,
                               method, 0, 0, crc, size32, usize32, len(nb), len(cextra), 0, 0, 0, 0,
                               0xFFFFFFFF if zip64 else offset)
        central += nb + cextra
    cd_offset = len(out)
    out += central
    n = len(entries)
    if zip64:
        eocd64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), cd_offset, 0)
    with open(path, "wb") as f:
        f.write(out)


def zip_entries(path):
    import zipfile
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def rezip(src, dst, prefix, **kw):
    """torch 1.13 output re-laid out as torch 2.x writes it: 'archive/' prefix, byteorder entry."""
    entries = [(prefix + n.split("/", 1)[1], d) for n, d in zip_entries(src)]
    entries.insert(1, (prefix + "byteorder", b"little"))
    entries.append((prefix + ".data/serialization_id", b"0123456789"))
    write_zip(dst, entries, **kw)


# ---------------------------------------------------------------- pickle emitter (protocol 2)
def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(i):
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    if -2**31 <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    return b"\x8a\x08" + struct.pack("<q", i)


def p_tuple(xs):
    return b")" if not xs else b"(" + b"".join(p_int(x) for x in xs) + b"t"


def p_tensor(key, numel, offset, size, stride, storage="FloatStorage"):
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(" + p_str("storage") +
            b"ctorch\n" + storage.encode() + b"\n" + p_str(key) + p_str("cpu") + p_int(numel) +
            b"tQ" + p_int(offset) + p_tuple(size) + p_tuple(stride) +
            b"\x89ccollections\nOrderedDict\n)Rt" + b"R")


def p_state_dict(items):
    body = b"".join(p_str(n) + t for n, t in items)
    return b"\x80\x02ccollections\nOrderedDict\n)R(" + body + b"u."


def write_pickle_bin(dirname, pkl, storages):
    """A torch.save-like zip with a hand-written data.pkl and raw storages {key: bytes}."""
    os.makedirs(dirname, exist_ok=True)
    entries = [("archive/data.pkl", pkl)]
    entries += [("archive/data/" + k, v) for k, v in storages.items()]
    entries.append(("archive/version", b"3\n"))
    write_zip(os.path.join(dirname, "pytorch_model.bin"), entries)


# ---------------------------------------------------------------- safetensors writer
ST_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype != torch.float32 else t.numpy().tobytes()
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def reference_json(path, tensors):
    ref = {n: {"shape": list(t.shape), "values": [float(v) for v in t.detach().float().reshape(-1)]}
           for n, t in tensors.items()}
    with open(path, "w") as f:
        json.dump(ref, f)


# ---------------------------------------------------------------- fixtures
def features():
    g = torch.Generator().manual_seed(1234)
    r = lambda *s: torch.randn(*s, generator=g)
    sd = collections.OrderedDict()
    sd["plain.f32"] = r(3, 5)
    tied = r(4, 6)
    sd["tied.a"] = tied
    sd["tied.b"] = tied
    base = r(5, 3)
    sd["view.a"] = base[0:2]
    sd["view.b"] = base[2:5]
    sd["transposed"] = r(4, 7).t()
    sd["permuted3d"] = r(2, 3, 4).permute(2, 0, 1)
    sd["sliced.step"] = r(6, 8)[1:5:2, ::3]
    sd["bf16"] = r(3, 4).bfloat16()
    sd["bf16.t"] = r(5, 3).bfloat16().t()
    sd["fp16"] = torch.tensor([6e-8, -1e-5, 65504.0, 0.0, -0.0, 0.333, -2.5, 1e-4]).half()
    sd["param"] = torch.nn.Parameter(r(2, 3))
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    d = os.path.join(ROOT, "features")
    os.makedirs(d, exist_ok=True)
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    reference_json(os.path.join(ROOT, "features_reference.json"), sd)
    for name, kw in (("features_archive", {"align": 64}), ("features_zip64", {"zip64": True})):
        os.makedirs(os.path.join(ROOT, name), exist_ok=True)
        rezip(os.path.join(d, "pytorch_model.bin"), os.path.join(ROOT, name, "pytorch_model.bin"),
              "archive/", **kw)
    os.makedirs(os.path.join(ROOT, "features_st"), exist_ok=True)
    write_safetensors(os.path.join(ROOT, "features_st", "model.safetensors"),
                      {n: t for n, t in sd.items() if n != "tied.b"})


def tiny_mlra4_tensors():
    """MLRA-4 state_dict written apart from the C++ tensor layout (models/VARIANTS.md 4.10)."""
    L, H, D, I, V, RQ, DN, DR = 2, 4, 32, 8, 64, 16, 8, 4
    g = torch.Generator().manual_seed(99)
    r = lambda *s: (torch.randn(*s, generator=g) * 0.5).bfloat16()
    sd = collections.OrderedDict()
    wte = r(V, D)
    sd["transformer.wte.weight"] = wte
    for i in range(L):
        p = f"transformer.h.{i}."
        sd[p + "attn.kv_b_proj"] = r(4, DN, H * 2 * DN)
        sd[p + "attn.q_a_proj.weight"] = r(RQ, D)
        sd[p + "attn.q_a_layernorm.weight"] = r(RQ)
        sd[p + "attn.q_b_proj.weight"] = r(H * (DN + DR), RQ)
        sd[p + "attn.kv_a_proj_with_mqa.weight"] = r(4 * DN + DR, D)
        for l in range(4):
            sd[p + f"attn.kv_a_layernorms.{l}.weight"] = r(DN)
        sd[p + "attn.c_proj.weight"] = r(D, H * DN)
        sd[p + "mlp.c_fc1.weight"] = r(I, D)
        sd[p + "mlp.c_fc2.weight"] = r(I, D)
        sd[p + "mlp.c_proj.weight"] = r(D, I)
        sd[p + "input_layernorm.weight"] = r(D)
        sd[p + "post_attention_layernorm.weight"] = r(D)
    sd["layernorm.weight"] = r(D)
    sd["lm_head.weight"] = wte
    config = {"n_layer": L, "n_head": H, "n_embd": D, "intermediate_size": I, "vocab_size": V,
              "block_size": 64, "bias": False, "dropout": 0.0, "q_lora_rank": RQ,
              "kv_lora_rank": 4 * DN, "qk_nope_head_dim": DN, "qk_rope_head_dim": DR,
              "model_type": "gpt2", "architectures": ["GPT"], "torch_dtype": "bfloat16"}
    return sd, config


def tiny_mlra4():
    sd, config = tiny_mlra4_tensors()
    shard1 = [n for n in sd if n.startswith("transformer.wte") or n.startswith("transformer.h.0.")
              or n == "lm_head.weight"]
    shards = [shard1, [n for n in sd if n not in shard1]]
    for kind in ("bin", "st"):
        d = os.path.join(ROOT, "tiny_mlra4_" + kind)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        weight_map = {}
        for k, names in enumerate(shards):
            if kind == "st":
                names = [n for n in names if n != "lm_head.weight"]  # HF drops the tied alias
                fname = f"model-{k + 1:05d}-of-00002.safetensors"
                write_safetensors(os.path.join(d, fname), {n: sd[n] for n in names})
            else:
                fname = f"pytorch_model-{k + 1:05d}-of-00002.bin"
                torch.save({n: sd[n] for n in names}, os.path.join(d, fname))
            weight_map.update({n: fname for n in names})
        index = "pytorch_model.bin.index.json" if kind == "bin" else "model.safetensors.index.json"
        with open(os.path.join(d, index), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)


def hostile():
    e = os.path.join(ROOT, "errors")
    four = struct.pack("<4f", 1, 2, 3, 4)
    write_pickle_bin(os.path.join(e, "global_os_system"),
                     b"\x80\x02cos\nsystem\nq\x00" + p_str("echo pwned") + b"\x85R.", {})
    write_pickle_bin(os.path.join(e, "global_eval_in_dict"),
                     b"\x80\x02ccollections\nOrderedDict\n)R(" + p_str("w") +
                     b"cbuiltins\neval\n" + p_str("1") + b"\x85Ru.", {})
    write_pickle_bin(os.path.join(e, "unknown_opcode"), b"\x80\x02}q\x00" + b"i__main__\nX\n.", {})
    write_pickle_bin(os.path.join(e, "deep_nesting"), b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b".", {})
    write_pickle_bin(os.path.join(e, "deep_marks"), b"\x80\x02" + b"(" * 5000 + b".", {})
    write_pickle_bin(os.path.join(e, "tensor_out_of_storage"),
                     p_state_dict([("w", p_tensor("0", 4, 1, [2, 2], [2, 1]))]), {"0": four})
    write_pickle_bin(os.path.join(e, "storage_exceeds_bytes"),
                     p_state_dict([("w", p_tensor("0", 100, 0, [10], [1]))]), {"0": four})
    write_pickle_bin(os.path.join(e, "double_storage"),
                     p_state_dict([("w", p_tensor("0", 2, 0, [2], [1], "DoubleStorage"))]), {"0": four})
    # The same valid state_dict, once stored and once with a deflated storage entry.
    ok = p_state_dict([("w", p_tensor("0", 4, 0, [2, 2], [2, 1]))])
    write_pickle_bin(os.path.join(e, "handwritten_ok"), ok, {"0": four})
    d = os.path.join(e, "compressed_entry")
    os.makedirs(d, exist_ok=True)
    write_zip(os.path.join(d, "pytorch_model.bin"),
              [("archive/data.pkl", ok), ("archive/data/0", four), ("archive/version", b"3\n")],
              deflate=("archive/data/0",))


def main():
    torch.manual_seed(0)
    features()
    tiny_mlra4()
    hostile()
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ROOT) for f in fs)
    print(f"loader fixtures: {total} bytes under {os.path.normpath(ROOT)}")
    if total > 200_000:
        sys.exit("fixtures exceed 200 KB")


if __name__ == "__main__":
    main()
