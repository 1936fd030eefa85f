"""Settings the port reads but does not act on are still checked: a typo is an error.

MeanFlow's and sCT's `jvp` chooses how the crate computes the JVP (docs/format.md: every
method gives the same values). The port always uses torch.func.jvp, so it accepts each of
the crate's values, defaults to the crate's default, and refuses anything else.
"""

from types import SimpleNamespace

import pytest
import torch

from diffuse_port.case import PortError
from diffuse_port.interfaces import meanflow, sct
from diffuse_port.interfaces.common import JVP_METHODS


def sct_context():
    """The least an sCT needs at construction: its log-variance head and no training step."""
    return SimpleNamespace(
        meta={},
        params={"logvar.W": torch.zeros(1, 4), "logvar.b": torch.zeros(1)},
        buffers={"logvar.freqs": torch.zeros(2)},
    )


def test_defaults_are_the_crates():
    assert meanflow.DEFAULTS["jvp"] == "auto"
    assert sct.DEFAULTS["jvp"] == "auto"


@pytest.mark.parametrize("method", JVP_METHODS)
def test_every_crate_method_is_accepted(method):
    assert meanflow.MeanFlow({"jvp": method}).cfg["jvp"] == method
    assert sct.Sct({"jvp": method}, sct_context()).cfg["jvp"] == method


@pytest.mark.parametrize("make", [
    lambda: meanflow.MeanFlow({"jvp": "double-backward"}),
    lambda: sct.Sct({"jvp": "finite_difference"}, sct_context()),
])
def test_an_unknown_method_is_refused(make):
    with pytest.raises(PortError, match="jvp="):
        make()
