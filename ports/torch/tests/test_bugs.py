"""Negative checks: three deliberate port bugs, each caught by `diffuse-spec verify` on exactly
the rows it should change, while every other row of the same cases still passes.

Each bug replaces one small method of the port (monkeypatch: the port's files are untouched),
runs a handful of cases, and compares the set of non-passing (case, quantity) rows with the set
written below. Why each row fails or passes is said next to it: this is what a port author
sees when they get one of these wrong.
"""

from fnmatch import fnmatch

import pytest

import oracle
from diffuse_port.interfaces import edm, meanflow, sit
from diffuse_port.run import run_case

PROBE_GRADS = ["grad.E", "grad.W1", "grad.W2", "grad.Wt", "grad.b1", "grad.b2"]
"""The probe's gradients that every loss reaches; grad.Wd only when the network gets a dt."""

BUGS = {
    # SiT's velocity target written as x - n instead of n - x.
    "sit_target_sign": dict(
        patch=(sit.SiT, "target", lambda self, x, n: x - n),
        cases={
            # t, n, x_t and the network output come before the target: they pass. grad.Wd is
            # zero either way (SiT gives the probe no dt).
            "sit_uniform_grad_b3_4x4x3_labels": ["out.loss", "out.target", *PROBE_GRADS],
            # REPA's alignment term sees only the features: repa_loss and the projector's
            # gradients pass, the diffusion part fails.
            "repa_sit_probe_grad_b3_w0p5": ["out.loss", "out.diffusion_loss", *PROBE_GRADS],
            # On the DiT every gradient fails but the attention key biases', zero in exact
            # arithmetic (judged against the case's gradient scale).
            "sit_dit_dropout_grad_b4": ["out.loss", "grad.*", "!grad.blocks.*.attn.key.bias"],
            # pred, score and the samplers never form the training target.
            "pred_sit_b7_labels": [],
            "smp_heun_sit_4_cfg3_q1": [],
            # an sCD teacher's velocity is a map of its prediction, not of SiT's target.
            "scd_sit_teacher_grad_b4": [],
        },
    ),
    # EDM's c_skip with sigma where sigma^2 belongs: xs^2 / (t + xs^2).
    "edm_c_skip": dict(
        patch=(edm.Edm, "c_skip", lambda self, t: self.xs**2 / (t + self.xs**2)),
        cases={
            "coef_edm_default_sigmas": ["out.c_skip"],
            # D = c_skip x_t + c_out F is the case's net_out; the target is x, unchanged.
            "edm_lognormal_grad_b4_4x4x3_labels": ["out.loss", "out.net_out", *PROBE_GRADS],
            "pred_edm_b6_labels_q2": ["out.pred", "out.score"],
            # the grid does not depend on the interface; the sample does.
            "smp_heun_edm_exp_8": ["out.x_final"],
            "sit_uniform_loss_b1_2x2x2": [],
        },
    ),
    # MeanFlow's target without its interval factor: v - du/dt instead of v - clip(t - r) du/dt.
    "meanflow_clip_dropped": dict(
        patch=(meanflow.MeanFlow, "target", lambda self, v, dudt, t, r: v - dudt),
        cases={
            # With norm_power 1 the loss value is l / (l + eps), about 1 whatever the target:
            # out.loss passes, the target and every gradient (grad.Wd too: MeanFlow gives dt) fail.
            "mf_defaults_grad_b4_4x4x3": ["out.target", *PROBE_GRADS, "grad.Wd"],
            # norm_power 0 is the plain squared error: the loss fails as well.
            "mf_noguidance_grad_b6_fm0_drop0_pow0": ["out.loss", "out.target", *PROBE_GRADS, "grad.Wd"],
            # fm_portion 1: r = t everywhere, the factor is 0 and the right target is v itself.
            "mf_mixture_grad_b4_fm1_drop0p9": ["out.loss", "out.target", *PROBE_GRADS, "grad.Wd"],
            # REPA over MeanFlow: only the network's gradients show it.
            "repa_meanflow_probe_grad_b4": [*PROBE_GRADS, "grad.Wd"],
            "mf_pred_b6_labels": [],
            "mf_eulerjump_3_cfg4_q14": [],
        },
    ),
}


def expected_failures(patterns: list[str], quantities: list[str]) -> set[str]:
    """The quantities matched by the patterns, less those matched by a `!pattern`."""
    keep = [p for p in patterns if not p.startswith("!")]
    drop = [p[1:] for p in patterns if p.startswith("!")]
    return {q for q in quantities if any(fnmatch(q, p) for p in keep) and not any(fnmatch(q, p) for p in drop)}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_fails_exactly_the_expected_rows(bug, candidate, monkeypatch):
    spec = BUGS[bug]
    monkeypatch.setattr(*spec["patch"])
    cases = spec["cases"]
    for name in cases:
        run_case(oracle.FIXTURES / name, candidate)
    verdict = oracle.verify(candidate, list(cases))

    quantities = {}
    for r in verdict.rows:
        quantities.setdefault(r["case"], []).append(r["quantity"])
    assert set(quantities) == set(cases), f"verify reported other cases:\n{verdict.report()}"
    expected = {(c, q) for c, pats in cases.items() for q in expected_failures(pats, quantities[c])}
    got = {(r["case"], r["quantity"]) for r in verdict.not_passing()}
    assert all(r["status"] in ("pass", "fail") for r in verdict.rows), f"an error row:\n{verdict.report()}"
    assert got == expected, (
        f"bug {bug}: rows that failed but should pass: {sorted(got - expected)}; rows that passed "
        f"but should fail: {sorted(expected - got)}\n{verdict.report()}"
    )
    assert verdict.rc == (1 if expected else 0)
    # the failure is worded as a port author needs it: the quantity, then where and by how much
    for r in verdict.not_passing():
        assert r["detail"].startswith("worst at"), r

