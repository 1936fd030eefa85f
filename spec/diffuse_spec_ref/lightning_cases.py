"""LightningDiT cases: the backbone alone (kind ``network``), SiT / EDM / MeanFlow losses and
gradients through it (label dropout in train mode, quirk Q17), REPA on it, and a sampler.

* ``network``: ``(out, features) = net(in.x, in.t, y=in.y, dt=in.dt, gw=in.gw)`` in eval mode
  (nothing drawn); ``in.y`` / ``in.dt`` / ``in.gw`` only where given (an absent ``dt`` or ``gw``
  on a network that takes it is quirk Q15, which the reference cannot run).
* ``loss`` / ``grad``: as the DiT cases (``dit_cases.compute_loss``): ``out.loss`` and
  ``grad.*``. The backbone starts in train mode and, whatever ``enable_dropout`` says (Q17),
  draws ``uniform([B])`` from ``label_dropout`` at each forward in train mode when
  ``class_dropout_prob > 0``.
* REPA: ``repa_cases.compute`` with this backbone's features.
* ``sampler``: ``sampler_cases``' computation with a LightningDiT in eval mode (the nnx form,
  so that ``nnx.scan`` carries it).

Other seeds and shapes than the reference's own LightningDiT cases: hidden 16 / 24 / 32
(theirs 32 / 64), patch 1, 2 and 3 (theirs 2 and 4), 4 to 16 tokens, odd batch sizes.

Not exported (the reference cannot run them; see ``REFUSED``): Q15 (``take_dt`` / ``take_gw``
without the input), Q16 (``qk_norm`` with ``attn_norm_layer: rms_norm``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import repa_cases
from .case import Case, split_arrays
from .dit_cases import compute_loss, network_arrays
from .interfaces import make_interface
from .networks.lightning_dit import LightningDiT, Unbuildable, lightning_apply
from .samplers import make_sampler

IFACES = ("sit", "edm", "mean_flow")

REFUSED = [
    ({"type": "lightning_dit", "take_dt": True}, "Q15: called without dt, the reference builds zeros_like of the "
     "[B, D] time embedding and the dt embedder fails"),
    ({"type": "lightning_dit", "qk_norm": True, "attn_norm_layer": "rms_norm"},
     "Q16: the reference's RMSNorm takes no rngs, so the q/k norm cannot be built"),
]


def _as_jnp(d: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in d.items()}


def compute_network(meta: dict, arrays: dict) -> dict:
    i = _as_jnp(split_arrays(arrays, "in"))
    out, feats = lightning_apply(
        _as_jnp(split_arrays(arrays, "param")), _as_jnp(split_arrays(arrays, "buffer")), meta["network"],
        i["x"], i["t"], y=i.get("y"), dt=i.get("dt"), gw=i.get("gw"), training=False,
    )
    res = {"out.out": np.asarray(out)}
    for j, f in enumerate(feats):
        res[f"out.feature.{j}"] = np.asarray(f)
    return res


def compute_sampler(meta: dict, arrays: dict) -> dict:
    sampler = make_sampler(meta["sampler"])
    net = LightningDiT(meta["network"], split_arrays(arrays, "param"), split_arrays(arrays, "buffer"))
    net.eval()  # samplers run the backbone in eval mode: no label dropout
    iface = make_interface(meta["interface"], net)
    x = jnp.asarray(arrays["in.x"])
    kwargs = {"y": jnp.asarray(arrays["in.y"])} if "in.y" in arrays else {}
    timegrid = sampler.sample_t(sampler.num_sampling_steps + 1)
    x_final = sampler.sample(nnx.Rngs(meta["rng_seed"]), iface, x,
                             guidance_scale=meta.get("guidance_scale", 1.0), **kwargs)
    return {"out.timegrid": np.asarray(timegrid), "out.x_final": np.asarray(x_final)}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("network", {}).get("type") != "lightning_dit":
        return None
    kind = meta.get("kind")
    if "repa" in meta:
        return repa_cases.compute(meta, arrays) if kind in ("loss", "grad") else None
    if kind == "network":
        return compute_network(meta, arrays)
    if kind in ("loss", "grad") and meta.get("interface", {}).get("type") in IFACES:
        return compute_loss(meta, arrays)
    if kind == "sampler" and meta.get("sampler", {}).get("type") in ("euler", "heun", "euler-maruyama"):
        return compute_sampler(meta, arrays)
    return None


def check_refused(net_cfg: dict) -> str:
    """Runs a refused configuration and returns the error it raises (for the record)."""
    cfg = {**ldit_cfg(), **net_cfg}
    try:
        arrays = network_arrays(cfg)
        s = int(cfg["input_size"])
        arrays["in.x"] = np.zeros((1, s, s, int(cfg["in_channels"])), np.float32)
        arrays["in.t"] = np.zeros((1,), np.float32)
        compute_network({"kind": "network", "network": cfg}, arrays)
    except Unbuildable as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


# ---------------------------------------------------------------------------
# fixtures


def ldit_cfg(**kw) -> dict:
    """Every switch off, 8x8x4 input, patch 2, hidden 16, 2 heads, depth 2, 10 classes."""
    cfg = {
        "type": "lightning_dit", "input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 16,
        "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "continuous_time_embed": False, "freq_embed_size": 8,
        "num_classes": 10, "class_dropout_prob": 0.1, "enable_dropout": True, "take_dt": False,
        "take_gw": False, "qk_norm": False, "attn_norm_layer": "layer_norm", "use_rope": False,
        "swiglu": False, "adaln_shift": False, "rms_norm": False, "param_seed": 0,
    }
    cfg.update(kw)
    return cfg


# the shipped ImageNet configurations' switches
IMAGENET = {"swiglu": True, "use_rope": True, "rms_norm": True, "adaln_shift": True}


def _normal(seed, shape, scale=1.0):
    return np.asarray(np.float32(scale) * jax.random.normal(jax.random.key(seed), tuple(shape)))


def _x_shape(cfg, batch):
    s = int(cfg["input_size"])
    return [batch, s, s, int(cfg["in_channels"])]


def _network_case(name, cfg, batch, t, y=None, dt=None, gw=None, x_seed=0, description=""):
    meta = {"kind": "network", "network": cfg, "description": description}
    arrays = network_arrays(cfg)
    arrays["in.x"] = _normal(x_seed, _x_shape(cfg, batch))
    arrays["in.t"] = np.asarray(t, dtype=np.float32)
    for k, v, dt_ in (("y", y, np.int32), ("dt", dt, np.float32), ("gw", gw, np.float32)):
        if v is not None:
            arrays[f"in.{k}"] = np.asarray(v, dtype=dt_)
    arrays.update(compute_network(meta, arrays))
    return Case(name, meta, arrays)


def _loss_case(name, kind, interface, cfg, batch, rngs, labels=None, x_seed=0, description=""):
    shape = _x_shape(cfg, batch)
    meta = {"kind": kind, "interface": interface, "network": cfg, "rngs": rngs, "shape": shape,
            "description": description}
    arrays = network_arrays(cfg)
    arrays["in.x"] = _normal(x_seed, shape)
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
    arrays.update(compute_loss(meta, arrays))
    return Case(name, meta, arrays)


def _sampler_case(name, sampler, interface, cfg, batch, guidance_scale, labels, rng_seed=0, x_seed=0,
                  description=""):
    meta = {"kind": "sampler", "sampler": sampler, "interface": interface, "network": cfg, "rng_seed": rng_seed,
            "guidance_scale": float(guidance_scale), "description": description}
    arrays = network_arrays(cfg)
    arrays["in.x"] = _normal(x_seed, _x_shape(cfg, batch))
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
    arrays.update(compute_sampler(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    r1 = {"default": 5, "time": 171, "noise": 172, "label_dropout": 173, "params": 174}
    r2 = {"time": 181, "noise": 182, "label_dropout": 183, "params": -184}
    every_on = dict(qk_norm=True, use_rope=True, swiglu=True, adaln_shift=True, rms_norm=True,
                    continuous_time_embed=True, take_dt=True, take_gw=True)
    # MeanFlow and guided sampling need the null class 1000 (Q10)
    k1000 = dict(num_classes=1000, class_dropout_prob=0.3)
    return [
        # --- the backbone alone (eval mode) ---
        _network_case("ldit_net_allon_patch1_b2",
                      ldit_cfg(input_size=4, patch_size=1, in_channels=3, hidden_size=24, **every_on,
                               class_dropout_prob=0.2, param_seed=201),
                      2, [0.15, 0.9], y=[3, 10], dt=[0.05, 0.6], gw=[1.0, 2.5], x_seed=701,
                      description="every switch on; patch 1 (16 tokens), head width 12 (3 RoPE frequencies); "
                                  "y = 10 = K is the null row"),
        _network_case("ldit_net_alloff_depth3_b1",
                      ldit_cfg(depth=3, num_heads=4, mlp_ratio=3.0, freq_embed_size=16, class_dropout_prob=0.0,
                               enable_dropout=False, param_seed=202),
                      1, [0.42], y=[7], x_seed=702,
                      description="every switch off; depth 3, 4 heads of width 4, batch 1; class_dropout_prob 0: "
                                  "a table of K rows"),
        _network_case("ldit_net_qknorm_rope_shift_patch3_nolabels_b3",
                      ldit_cfg(input_size=6, patch_size=3, in_channels=2, hidden_size=32, num_heads=4,
                               mlp_ratio=1.5, freq_embed_size=15, qk_norm=True, use_rope=True, swiglu=True,
                               adaln_shift=True, take_gw=True, param_seed=203),
                      3, [0.0, 0.5, 1.0], gw=[1.0, 1.5, 4.0], x_seed=703,
                      description="qk-norm (one LayerNorm for q and k, Q18) + RoPE on a 2 x 2 grid, SwiGLU "
                                  "(hidden int(2/3 * 48) = 32), adaLN with shift under LayerNorm; odd "
                                  "freq_embed_size 15; no labels (the null row K)"),
        # --- interfaces through it, label dropout in train mode ---
        _loss_case("sit_ldit_q17_grad_b3", "grad", {"type": "sit", "train_time_dist_type": "logitnormal"},
                   ldit_cfg(in_channels=2, use_rope=True, rms_norm=True, swiglu=True, class_dropout_prob=0.5,
                            enable_dropout=False, param_seed=204),
                   3, r1, labels=[1, 4, 9], x_seed=704,
                   description="Q17: enable_dropout false, yet the labels are dropped in train mode "
                               "(uniform([B]) from label_dropout after time and noise)"),
        _loss_case("edm_ldit_qknorm_shift_loss_b2", "loss", {"type": "edm", "train_time_dist_type": "lognormal"},
                   ldit_cfg(qk_norm=True, adaln_shift=True, continuous_time_embed=True, class_dropout_prob=0.7,
                            param_seed=205),
                   2, r2, labels=[0, 5], x_seed=705,
                   description="EDM's c_noise into the continuous time embedder; qk-norm, adaLN with shift; "
                               "class_dropout_prob 0.7 drops the second label only"),
        _loss_case("mf_ldit_imagenet_mixture_grad_b2", "grad",
                   {"type": "mean_flow", "train_time_dist_type": "logitnormal", "guidance_scale": 1.5,
                    "guidance_mixture_ratio": 0.5, "fm_portion": 0.5, "cond_drop_ratio": 0.4},
                   ldit_cfg(input_size=4, patch_size=1, **IMAGENET, take_dt=True, continuous_time_embed=True,
                            num_classes=1000, class_dropout_prob=0.5, param_seed=206),
                   2, r1, labels=[17, 999], x_seed=706,
                   description="MeanFlow on the ImageNet switches (SwiGLU, RoPE, RMSNorm, adaLN shift) + dt: "
                               "the JVP runs through RoPE, RMSNorm and SwiGLU; mixture path, so the JVP "
                               "forward is in train mode and draws label dropout (Q8, Q17): the condition drop takes "
                               "example 0, the network's own dropout example 1"),
        _loss_case("mf_ldit_cfgonly_qknorm_rope_loss_b3", "loss",
                   {"type": "mean_flow", "train_time_dist_type": "uniform", "guidance_scale": 2.0,
                    "guidance_mixture_ratio": 0.0, "fm_portion": 0.25, "cond_drop_ratio": 0.5},
                   ldit_cfg(qk_norm=True, use_rope=True, take_dt=True, **k1000, param_seed=207),
                   3, r2, labels=[1, 2, 1000], x_seed=707,
                   description="CFG-only MeanFlow (Q8: the JVP forward in eval mode draws nothing); the JVP "
                               "runs through the shared q/k LayerNorm and RoPE"),
        # --- REPA on it ---
        repa_cases._case("repa_sit_ldit_depth3_grad_b2", "grad", {"type": "sit", "train_time_dist_type": "uniform"},
                         ldit_cfg(depth=3, qk_norm=True, use_rope=True, rms_norm=True, class_dropout_prob=0.7,
                                  param_seed=208),
                         [2, 8, 8, 4], r2, {"feature_dim": 6, "proj_dim": 12, "repa_depth": 2, "repa_loss_weight": 0.5},
                         labels=[3, 8], x_seed=708,
                         description="REPA on block 2 of 3 of a LightningDiT (qk-norm, RoPE, RMSNorm); label "
                                     "dropout drawn in train mode (drops the second label)"),
        # --- a sampler on it ---
        _sampler_case("smp_euler_sit_ldit_cfg2_b2",
                      {"type": "euler", "num_sampling_steps": 4, "sampling_time_dist": "uniform"},
                      {"type": "sit", "train_time_dist_type": "uniform"},
                      ldit_cfg(**IMAGENET, **k1000, param_seed=209), 2, 2.0, [5, 1000], x_seed=709,
                      description="guided Euler (scale 2: the unconditional pass with label 1000) on the "
                                  "ImageNet switches; the backbone in eval mode"),
    ]
