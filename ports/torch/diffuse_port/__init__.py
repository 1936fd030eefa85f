"""A PyTorch port of the diffuse_nnx interfaces, written from diffuse-spec's docs/format.md and
docs/reference.md alone, checked against the oracle with `diffuse-spec verify`.

Layout (one module per interface, network and sampler, as the crate):

    case.py          read a case: case.json, arrays by role, the raw draws by what they feed
    networks/        probe_mlp, dit                        (registry: networks/__init__.py)
    interfaces/      sit, edm, meanflow, repa, sct, scd, trigflow   (interfaces/__init__.py)
    samplers/        grid, euler, heun, euler_maruyama, euler_jump  (samplers/__init__.py)
    run.py           a case -> the candidate files verify reads (one handler per kind)

Everything is float32. Random numbers come only from the case's `draw.*` files.
"""

NULL_CLASS = 1000
"""The null class of every interface and sampler, whatever the network (reference.md, Q10)."""
