"""DINOv2 feature-detector cases: kind ``encoder`` (REPA's target features).

The reference's detector (``networks/encoders/dino.py`` of diffuse_nnx) is transformers'
``FlaxDinov2Model`` behind a preprocess; this module runs that very model (transformers
4.46.3, built from a ``Dinov2Config``, never downloaded) with randomly drawn weights:

    preprocess(x): x = (x + 1) / 2;  x = (x - mean) / std per channel;
                   jax.image.resize to h x h, h = 224 * (H // 256), bicubic, antialias off;
                   NHWC -> NCHW                                   -> out.pixels [B, 3, h, h]
    encode(x):     FlaxDinov2Model(preprocess(x)).last_hidden_state[:, 1:]
                                                                  -> out.features [B, (h/14)^2, D]

Settings (``encoder`` block): ``type`` ``dino``, ``stage`` ``preprocess`` | ``encode`` and,
for ``encode``, the ViT's (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
``intermediate_size``, ``patch_size`` 14, ``image_size`` 224, ``layer_norm_eps``,
``layerscale_value``, ``hidden_act`` ``gelu``, ``use_swiglu_ffn`` false, ``qkv_bias``).
``Dinov2Config`` has no ``intermediate_size``: the MLP is ``hidden_size * mlp_ratio`` wide
(``mlp_ratio`` default 4, an optional key here), and an ``intermediate_size`` passed to it is
stored and never read (the shared case ``dino_encode_b1_256_heads2_depth3`` says 192 and is
256 wide). The cases here write ``intermediate_size`` equal to the width actually built.
The ViT runs under ``jax.jit`` (the reference jits ``encode``), the preprocess eagerly: the
shared golden cases' pixels equal the eager ``jax.image.resize`` bit for bit (all of them at
512, 99.6 % at 256), against 62 % for a jitted one.

Observed in transformers 4.46.3's Flax model (and so in the reference):
* the position table is resized with ``s = float32((S + 0.1) / sqrt(N))`` (``N`` its patch
  rows) whenever the token grid ``S x S`` differs from the table's;
* with that resize, a batch of more than one image fails (the resized table is reshaped to
  ``[B, -1, D]`` and concatenated with a ``[1, 1, D]`` class row): ``encode`` cases with
  ``S != sqrt(N)`` have ``B = 1``;
* ``layerscale_value`` multiplies the stored ``lambda1`` twice (``value * lambda1 * value``);
* ``use_swiglu_ffn = True`` cannot be built (its FFN reads an attribute it never sets).

``fixture_cases()`` are committed under fixtures/v1 (3.4 MB); ``generated_cases()`` (512,
600 and 768 inputs: a 768 image alone is 7 MB as float32, too large for the repository) are
written at test time by ``tests/golden_dino.rs`` into a temporary directory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .case import Case, split_arrays

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

VIT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "mlp_ratio",
            "patch_size", "image_size", "layer_norm_eps", "layerscale_value", "hidden_act", "use_swiglu_ffn",
            "qkv_bias")


def preprocess(x):
    """``[B, H, W, 3]`` in [-1, 1] -> ``[B, 3, h, h]``, h = 224 * (H // 256) (the reference's)."""
    mean = jnp.asarray(MEAN, jnp.float32)
    std = jnp.asarray(STD, jnp.float32)
    x = (x + 1) / 2
    x = (x - mean) / std
    b, hh, _, c = x.shape
    h = 224 * (hh // 256)
    x = jax.image.resize(x, (b, h, h, c), method="bicubic", antialias=False)
    return jnp.transpose(x, (0, 3, 1, 2))


def vit_settings(**kw) -> dict:
    """An ``encoder`` block for stage ``encode``: a small DINOv2 with the base model's layout."""
    s = {"type": "dino", "stage": "encode", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 128, "patch_size": 14, "image_size": 224, "layer_norm_eps": 1e-6,
         "layerscale_value": 1.0, "hidden_act": "gelu", "use_swiglu_ffn": False, "qkv_bias": True}
    s.update(kw)
    return s


def dinov2_config(enc: dict):
    """The ``Dinov2Config`` of an ``encoder`` block, built as the reference builds it: the MLP
    width is ``hidden_size * mlp_ratio`` (default 4); ``intermediate_size`` is handed over too,
    and transformers keeps it as an attribute that nothing reads."""
    from transformers import Dinov2Config

    extra = {"mlp_ratio": int(enc["mlp_ratio"])} if "mlp_ratio" in enc else {}
    if "intermediate_size" in enc:
        extra["intermediate_size"] = int(enc["intermediate_size"])
    return Dinov2Config(hidden_size=int(enc["hidden_size"]), num_hidden_layers=int(enc["num_hidden_layers"]),
                        num_attention_heads=int(enc["num_attention_heads"]), **extra,
                        hidden_act=enc["hidden_act"], layer_norm_eps=float(enc["layer_norm_eps"]),
                        image_size=int(enc["image_size"]), patch_size=int(enc["patch_size"]), num_channels=3,
                        qkv_bias=bool(enc["qkv_bias"]), layerscale_value=float(enc["layerscale_value"]),
                        use_swiglu_ffn=bool(enc["use_swiglu_ffn"]), hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, drop_path_rate=0.0)


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *head, leaf = path.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[leaf] = jnp.asarray(v)
    return tree


def _flatten(tree, prefix="") -> dict:
    out = {}
    for k, v in tree.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, p + "."))
        else:
            out[p] = v
    return out


@functools.lru_cache(maxsize=None)
def _model(enc_items: tuple):
    from transformers import FlaxDinov2Model

    enc = dict(enc_items)
    return FlaxDinov2Model(dinov2_config(enc), _do_init=False)


def encode_fn(enc: dict):
    """``encode(params, x) -> (pixels, features)``: the preprocess eagerly, the ViT under jit."""
    model = _model(tuple(sorted((k, enc[k]) for k in VIT_KEYS if k in enc)))
    vit = jax.jit(lambda params, p: model(p, params=params).last_hidden_state[:, 1:])

    def encode(params, x):
        p = preprocess(x)
        return p, vit(params, p)

    return encode


def param_shapes(enc: dict) -> dict:
    """``{flax path: shape}`` of the transformers model (``jax.eval_shape`` of its init)."""
    from transformers import FlaxDinov2Model

    model = FlaxDinov2Model(dinov2_config(enc), _do_init=False)
    shapes = jax.eval_shape(lambda k: model.init_weights(k, (1, enc["image_size"], enc["image_size"], 3)),
                            jax.random.key(0))
    return {k: tuple(v.shape) for k, v in _flatten(shapes).items()}


def draw_params(enc: dict, seed: int) -> dict:
    """Random weights of the size the golden cases use: kernels and biases N(0, 0.08^2),
    tokens and the position table N(0, 0.5^2), LayerNorm scales and layer scales 1 + N(0, 0.1^2)."""
    key = jax.random.key(seed)
    out = {}
    for i, (path, shape) in enumerate(sorted(param_shapes(enc).items())):
        n = jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)
        leaf = path.rsplit(".", 1)[-1]
        if leaf in ("cls_token", "mask_token", "position_embeddings"):
            v = 0.5 * n
        elif leaf in ("scale", "lambda1"):
            v = 1.0 + 0.1 * n
        else:
            v = 0.08 * n
        out[path] = np.asarray(v, np.float32)
    return out


def compute(meta: dict, arrays: dict) -> dict:
    enc = meta["encoder"]
    x = jnp.asarray(arrays["in.x"])
    if enc["stage"] == "preprocess":
        return {"out.pixels": np.asarray(preprocess(x))}
    params = _unflatten(split_arrays(arrays, "param"))
    pixels, feats = encode_fn(enc)(params, x)
    return {"out.pixels": np.asarray(pixels), "out.features": np.asarray(feats)}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("kind") != "encoder":
        return None
    return compute(meta, arrays)


# ---------------------------------------------------------------------------
# fixtures


def _image(seed: int, batch: int, size) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    return np.asarray(jax.random.uniform(jax.random.key(seed), (batch, h, w, 3), jnp.float32, -1.0, 1.0))


def _case(name: str, enc: dict, batch: int, size, x_seed: int, param_seed: int | None = None,
          description: str = "") -> Case:
    meta = {"kind": "encoder", "encoder": dict(enc)}
    arrays = {"in.x": _image(x_seed, batch, size)}
    if enc["stage"] == "encode":
        meta["encoder"]["param_seed"] = param_seed
        arrays.update({f"param.{k}": v for k, v in draw_params(enc, param_seed).items()})
    if description:
        meta["description"] = description
    arrays.update(compute(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    """The committed cases (about 3.4 MB): one image each, 256 and 288 (floored to 224, Q19)."""
    return [
        _case("dino_encode_b1_288_q19", vit_settings(), 1, 288, x_seed=2101, param_seed=2102,
              description="288 is floored to a 224 resize (Q19); 32 wide, 2 heads, 2 layers"),
        _case("dino_encode_b1_256_nobias_ls0p5", vit_settings(num_attention_heads=4, num_hidden_layers=1,
                                                              qkv_bias=False, layerscale_value=0.5,
                                                              mlp_ratio=2, intermediate_size=64), 1, 256,
              x_seed=2103, param_seed=2104,
              description="no q/k/v bias; layerscale_value 0.5, which the Flax model applies twice"),
    ]


def generated_cases() -> list[Case]:
    """Cases too large to commit (512 / 768 inputs), written at test time."""
    return [
        _case("dino_preprocess_b1_600_q19", {"type": "dino", "stage": "preprocess"}, 1, 600, x_seed=2201,
              description="600 is floored to a 448 resize (Q19)"),
        _case("dino_preprocess_b1_256x320_q19", {"type": "dino", "stage": "preprocess"}, 1, (256, 320), x_seed=2208,
              description="non-square: the height sets the side, the width is squashed to it (Q19)"),
        _case("dino_encode_b1_512_heads4_depth3", vit_settings(num_attention_heads=4, num_hidden_layers=3), 1, 512,
              x_seed=2202, param_seed=2203, description="position table 16 -> 32 with s = float32(32.1 / 16)"),
        _case("dino_encode_b1_768_heads1", vit_settings(num_attention_heads=1, mlp_ratio=2, intermediate_size=64), 1, 768,
              x_seed=2204, param_seed=2205, description="position table 16 -> 48 with s = float32(48.1 / 16)"),
        _case("dino_encode_b3_256_depth4", vit_settings(num_hidden_layers=4), 3, 256, x_seed=2206, param_seed=2207,
              description="a batch of 3 at 256 (no table resize)"),
    ]
