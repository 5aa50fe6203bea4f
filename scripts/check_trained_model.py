#!/usr/bin/python3
"""Cross-checks a checkpoint saved by train_default_model.py: it loads into our training model
(small_gpt.py, fp32) and into engineer C's independent float64 reference (reference_model.py),
and both must give the same logits on random token ids (max relative error < 1e-4). Also checks
the release's format details: tied embedding pickled once, state_dict key order, config fields.
Usage: check_trained_model.py MODEL_DIR [MODEL_DIR ...]  (variant told apart by keys, flag F1)."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model  # noqa: E402
from small_gpt import GPT  # noqa: E402

kReferenceName = {"mlra_4": "mlra4", "mla": "mla", "gqa": "gqa"}
kTolerance = 1e-4


def check(folder, seq_len=48, seed=0):
    config, sd64 = reference_model.load_checkpoint(folder, torch.float64)
    variant = ("mlra_4" if "transformer.h.0.attn.kv_b_proj" in sd64
               else "mla" if "transformer.h.0.attn.kv_a_layernorm.weight" in sd64 else "gqa")
    for key in ("model_type", "architectures", "torch_dtype", "transformers_version"):
        assert key in config, f"config.json lacks {key}"
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT"]

    # Our model from the checkpoint's raw tensors (fp32), in state_dict order.
    raw = {}
    index = os.path.join(folder, "pytorch_model.bin.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
             else ["pytorch_model.bin"])
    for name in files:
        shard = torch.load(os.path.join(folder, name), map_location="cpu")
        if "transformer.wte.weight" in shard:
            assert shard["transformer.wte.weight"].data_ptr() == shard["lm_head.weight"].data_ptr(), \
                "tied embedding is not one storage"
        raw.update(shard)
    model = GPT(config, variant)
    expected_order = list(model.state_dict().keys())
    assert sorted(raw) == sorted(expected_order), "key set differs from the model's state_dict"
    model.load_state_dict({k: v.float() for k, v in raw.items()})
    model.eval()

    ref = reference_model.Reference(reference_model.Spec(config, kReferenceName[variant]), sd64)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50257, (seq_len,), generator=g)
    with torch.no_grad():
        ours = model(ids[None])[0].double()
    theirs = ref.forward(ids.tolist())
    rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    ok = rel < kTolerance
    print(f"{folder} ({variant}): {len(raw)} keys in {len(files)} file(s), max rel err vs float64 reference "
          f"{rel:.2e} {'OK' if ok else 'FAIL'}")
    return ok


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    results = [check(folder) for folder in sys.argv[1:]]
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
