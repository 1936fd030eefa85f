"""Cross-check REPA's DINOv2 detector against torch's own pipeline, with the same weights.

    cd spec && python scripts/dino_torch_xcheck.py --torch-site SITE_PACKAGES \\
        --case ../fixtures/v1/dino_encode_b1_288_q19 --out ../fixtures/dino_torch

Run with the spec environment's python (jax 0.5.1, flax 0.10.2, transformers 4.46.3);
``--torch-site`` is the ``site-packages`` of an environment with torch 2.11 (the build's
``torch-2.11.0`` one), appended to ``sys.path`` so that transformers sees torch as well
(both environments hold numpy 2.4.6; the spec one's comes first). ``make dino-xcheck``
runs it. Nothing is downloaded: the model is the fixture case's random weights.

The reference: the fixture case's ``FlaxDinov2Model`` behind JAX's preprocess (the
``dino_cases`` restatement). Torch's pipeline, as a PyTorch port of REPA writes it:
``(x + 1) / 2``, ``(x - mean) / std``, ``F.interpolate(x, 224 * (H // 256),
mode="bicubic")`` (a = -0.75, align_corners False, no antialias), then transformers'
PyTorch ``Dinov2Model`` (weights converted by transformers' own
``load_flax_weights_in_pytorch_model``), whose position table is resized with
``F.interpolate(size=(S, S), mode="bicubic")``. ``last_hidden_state[:, 1:]`` on both sides.

Written to ``--out`` (byte-reproducible): ``model.safetensors`` and ``config.json`` (the
converted model, ``save_pretrained``), torch's outputs ``torch_pixels_288.npy``,
``torch_features_288.npy``, ``torch_features_512.npy``, ``torch_table_32.npy``, the
reference's ``reference_features_512.npy``, ``reference_table_32.npy``, and
``xcheck.json``: provenance, the sha256 of the case files read, and the drift table
(printed as markdown too). Inputs: the case's ``in.x`` (uniform noise, 288 x 288) and two
exact integer formulas evaluated in float32 (``smooth`` and ``texture`` below), which the
crate's test recomputes bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

import numpy as np


def smooth(size: int) -> np.ndarray:
    """``[1, S, S, 3]``: ``v_c = 4 (h (S-1-h) + w (S-1-w)) (3 - c) / (3 (S-1)^2) - 1`` (float32,
    numerator and denominator exact integers, one division, one subtraction)."""
    s = size
    h = np.arange(s, dtype=np.int64)[:, None, None]
    w = np.arange(s, dtype=np.int64)[None, :, None]
    c = np.arange(3, dtype=np.int64)[None, None, :]
    num = (4 * (h * (s - 1 - h) + w * (s - 1 - w)) * (3 - c)).astype(np.float32)
    den = np.float32(3 * (s - 1) ** 2)
    return (num / den - np.float32(1))[None]


def texture(size: int) -> np.ndarray:
    """``[1, S, S, 3]``: ``v = ((131 h + 71 w + 37 c + (h w mod 97)) mod 256) / 127.5 - 1`` (float32)."""
    s = size
    h = np.arange(s, dtype=np.int64)[:, None, None]
    w = np.arange(s, dtype=np.int64)[None, :, None]
    c = np.arange(3, dtype=np.int64)[None, None, :]
    k = ((131 * h + 71 * w + 37 * c + (h * w) % 97) % 256).astype(np.float32)
    return (k / np.float32(127.5) - np.float32(1))[None]


def drift(ref: np.ndarray, other: np.ndarray) -> dict:
    """max |d|, max |d| / max |ref|, rms(d) / rms(ref) and, for [B, T, D] features, the mean
    over tokens of 1 - cos(ref, other) (the change of a REPA loss term)."""
    r = ref.astype(np.float64)
    o = other.astype(np.float64)
    d = o - r
    out = {
        "max_abs": float(np.abs(d).max()),
        "max_rel_scale": float(np.abs(d).max() / np.abs(r).max()),
        "rms_rel": float(np.sqrt((d ** 2).mean()) / np.sqrt((r ** 2).mean())),
    }
    if r.ndim == 3:
        cos = (r * o).sum(-1) / (np.linalg.norm(r, axis=-1) * np.linalg.norm(o, axis=-1))
        out["one_minus_cos"] = float((1.0 - cos).mean())
    return out


def _sha(p: pathlib.Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--torch-site", required=True, help="site-packages holding torch 2.11")
    ap.add_argument("--case", required=True, type=pathlib.Path, help="an encode case of fixtures/v1")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    args = ap.parse_args(argv)
    sys.path.append(args.torch_site)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import Dinov2Model
    from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

    from diffuse_spec_ref import dino_cases as dc
    from diffuse_spec_ref.case import read_case, split_arrays

    torch.manual_seed(0)
    torch.set_num_threads(1)
    meta, arrays = read_case(args.case)
    enc = meta["encoder"]
    flat = split_arrays(arrays, "param")
    params = dc._unflatten(flat)
    cfg = dc.dinov2_config(enc)
    d = int(enc["hidden_size"])

    pt = Dinov2Model(cfg)
    pt = load_flax_weights_in_pytorch_model(pt, jax.tree_util.tree_map(np.asarray, params))
    pt.eval()
    sd = pt.state_dict()
    if len(sd) != len(flat):
        raise SystemExit(f"converted {len(sd)} tensors from {len(flat)} Flax parameters")

    mean = torch.tensor(dc.MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(dc.STD, dtype=torch.float32)[:, None, None]

    def torch_pixels(x: np.ndarray) -> torch.Tensor:
        p = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        p = ((p + 1) / 2 - mean) / std
        return F.interpolate(p, 224 * (x.shape[1] // 256), mode="bicubic")

    @torch.no_grad()
    def torch_vit(p) -> np.ndarray:
        p = torch.as_tensor(np.asarray(p)) if not isinstance(p, torch.Tensor) else p
        return pt(pixel_values=p).last_hidden_state[:, 1:].numpy()

    ref_encode = dc.encode_fn(enc)
    model = dc._model(tuple(sorted((k, enc[k]) for k in dc.VIT_KEYS if k in enc)))
    ref_vit = jax.jit(lambda prm, p: model(p, params=prm).last_hidden_state[:, 1:])

    def ref_table(s: int) -> np.ndarray:
        def f(module):
            emb = module.embeddings
            hs = jnp.zeros((1, s * s + 1, d), jnp.float32)
            return emb.interpolate_pos_encoding(module.config, hs, s * 14, s * 14, emb.position_embeddings)
        return np.asarray(model.module.apply({"params": params}, method=f))

    @torch.no_grad()
    def torch_table(s: int) -> np.ndarray:
        return pt.embeddings.interpolate_pos_encoding(torch.zeros(1, s * s + 1, d), s * 14, s * 14).numpy()

    rows = []

    def row(name, what, ref, other, stored=None):
        r = {"row": name, "what": what, **drift(ref, other)}
        if stored:
            r["stored"] = stored
        rows.append(r)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        p.unlink()
    save = {}

    # 288: the fixture case's noise image (its out.* are the reference's)
    x288 = arrays["in.x"]
    tp288 = torch_pixels(x288)
    tf288 = torch_vit(tp288)
    save["torch_pixels_288"], save["torch_features_288"] = tp288.numpy(), tf288
    row("pixels_288_noise", "pixels, 288 uniform noise", arrays["out.pixels"], tp288.numpy(), "torch_pixels_288")
    row("features_288_noise", "features, 288 uniform noise (resize only: S = 16)", arrays["out.features"], tf288,
        "torch_features_288")
    # tables
    rt32, tt32 = ref_table(32), torch_table(32)
    save["reference_table_32"], save["torch_table_32"] = rt32, tt32
    row("table_32", "position table 16 -> 32 (the model's random table)", rt32, tt32, "torch_table_32")
    row("table_48", "position table 16 -> 48", ref_table(48), torch_table(48))
    # 512 smooth, with the two sources of drift apart
    x512 = smooth(512)
    rp512, rf512 = ref_encode(params, jnp.asarray(x512))
    rp512, rf512 = np.asarray(rp512), np.asarray(rf512)
    tp512 = torch_pixels(x512)
    tf512 = torch_vit(tp512)
    save["reference_features_512"], save["torch_features_512"] = rf512, tf512
    row("pixels_512_smooth", "pixels, 512 smooth", rp512, tp512.numpy())
    row("features_512_smooth", "features, 512 smooth (both)", rf512, tf512, "torch_features_512")
    row("features_512_smooth_resize_only", "features, 512 smooth: torch's resize, the reference's ViT", rf512,
        np.asarray(ref_vit(params, jnp.asarray(tp512.numpy()))))
    row("features_512_smooth_table_only", "features, 512 smooth: the reference's pixels, torch's ViT", rf512,
        torch_vit(torch.from_numpy(rp512)))
    # 768 texture
    x768 = texture(768)
    rp768, rf768 = ref_encode(params, jnp.asarray(x768))
    tp768 = torch_pixels(x768)
    row("pixels_768_texture", "pixels, 768 texture", np.asarray(rp768), tp768.numpy())
    row("features_768_texture", "features, 768 texture (both)", np.asarray(rf768), torch_vit(tp768))

    pt.save_pretrained(out, safe_serialization=True)
    for k, v in save.items():
        np.save(out / f"{k}.npy", np.ascontiguousarray(v, dtype=np.float32), allow_pickle=False)
    case_files = {p.name: _sha(p) for p in sorted(args.case.glob("*")) if p.is_file()}
    info = {
        "source_case": args.case.name,
        "source_sha256": case_files,
        "versions": {"jax": jax.__version__, "flax": __import__("flax").__version__, "numpy": np.__version__,
                     "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
        "torch_attention": pt.config._attn_implementation,
        "torch_pipeline": "F.interpolate(x, 224 * (H // 256), mode='bicubic'); Dinov2Model (PyTorch)",
        "inputs": {"288": "the case's in.x", "512": "smooth(512)", "768": "texture(768)"},
        "rows": rows,
    }
    (out / "xcheck.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print("| quantity | max abs | max / scale | rms / rms | 1 - cos |")
    print("|---|---|---|---|---|")
    for r in rows:
        cos = f"{r['one_minus_cos']:.2e}" if "one_minus_cos" in r else "-"
        print(f"| {r['what']} | {r['max_abs']:.2e} | {r['max_rel_scale']:.2e} | {r['rms_rel']:.2e} | {cos} |")
    print(f"wrote {out} ({sum(p.stat().st_size for p in out.iterdir())} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
