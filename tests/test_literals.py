"""The reader of rl-baselines3-zoo's Python-literal strings: data in, nothing evaluated, anything else refused."""

from __future__ import annotations

import pytest
import torch as th
from sb3_contrib.common.torch_layers import BatchRenorm1d
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.torch_layers import NatureCNN

from pgplug.errors import PgplugError
from pgplug.interop.config import literal_class
from pgplug.interop.literals import read_python_literal


def read(text: str) -> object:
    return read_python_literal(text, "policy_kwargs", literal_class)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dict(log_std_init=-2, ortho_init=False)", {"log_std_init": -2, "ortho_init": False}),
        ("{'norm_obs': True, 'norm_reward': False}", {"norm_obs": True, "norm_reward": False}),
        ("dict(net_arch=dict(pi=[256, 256], qf=[1024, 1024]))", {"net_arch": {"pi": [256, 256], "qf": [1024, 1024]}}),
        (
            "dict(a=(1, 2.5), b=None, c='x', d=+3, e=-1e-5, f=[])",
            {"a": (1, 2.5), "b": None, "c": "x", "d": 3, "e": -1e-5, "f": []},
        ),
        ("dict(\n    log_std_init=-1,\n    net_arch=[64, 64],\n)", {"log_std_init": -1, "net_arch": [64, 64]}),
        ("[1, 2]", [1, 2]),
        ("'text'", "text"),
        ("{1: 'a'}", {1: "a"}),
    ],
)
def test_reads_literals_as_data(text, expected):
    assert read(text) == expected


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("nn.ReLU", th.nn.ReLU),
        ("th.nn.Tanh", th.nn.Tanh),
        ("torch.nn.GELU", th.nn.GELU),
        ("th.optim.Adam", th.optim.Adam),
        ("RMSpropTFLike", RMSpropTFLike),
        ("NatureCNN", NatureCNN),
        ("stable_baselines3.common.torch_layers.NatureCNN", NatureCNN),
        ("sb3_contrib.common.torch_layers.BatchRenorm1d", BatchRenorm1d),
    ],
)
def test_resolves_the_allowed_class_names(text, cls):
    assert read(f"dict(x={text})") == {"x": cls}


def test_the_zoo_atari_optimizer_string():
    assert read("dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))") == {
        "optimizer_class": RMSpropTFLike,
        "optimizer_kwargs": {"eps": 1e-5},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", r"__import__\('os'\)\" is a call other than dict\(...\)"),
        ("dict(x=__import__('os').system('true'))", "is a call other than dict"),
        ("dict(x=os.system)", "name 'os.system' is not allowed; allowed names: nn.X / th.nn.X activations"),
        ("dict(x=nn.functional.relu)", "name 'torch.nn.functional.relu' is not allowed"),
        ("dict(x=th.optim.Adam.step)", "name 'torch.optim.Adam.step' is not allowed"),
        ("dict(x=nn.Nope)", "module 'torch.nn' has no attribute 'Nope'"),
        ("dict(x=th.optim.lr_scheduler)", "is not a subclass of torch.optim.Optimizer"),
        (
            "dict(x=stable_baselines3.common.utils.get_device)",
            "'stable_baselines3.common.utils.get_device' is not a class",
        ),
        ("dict(x=getattr)", "name 'getattr' is not allowed"),
        ("dict(x=''.join)", r"''.join\" is not allowed"),
        ("dict(x=().__class__)", r"'\(\).__class__' is not allowed"),
        ("dict(x=lambda: 0)", "'lambda: 0' is not allowed"),
        ("[x for x in range(3)]", r"'\[x for x in range\(3\)\]' is not allowed"),
        ("{k: 1 for k in 'ab'}", "is not allowed"),
        ("dict(x=1 + 2)", "'1 \\+ 2' is not allowed"),
        ("dict(x=[1][0])", r"'\[1\]\[0\]' is not allowed"),
        ("dict(x=f'{1}')", "is not allowed"),
        ("dict(x=-True)", "'-True' is not allowed"),
        ("dict(**{'a': 1})", r"dict\(...\) takes key=value arguments only"),
        ("dict([('a', 1)])", r"dict\(...\) takes key=value arguments only"),
        ("{**{'a': 1}}", r"\(a \*\* expansion\) is not allowed"),
        ("{(1, 2): 3}", "is not allowed as a key"),
        ("dict(x=dict)", "is not allowed on its own"),
        ("dict(x=1", "is not a Python literal: '\\(' was never closed"),
        ("x = 1", "is not a Python literal"),
        ("b'bytes'", "is not allowed"),
    ],
)
def test_refuses_everything_else_in_one_line(text, message):
    with pytest.raises(PgplugError, match=message) as info:
        read(text)
    assert "\n" not in str(info.value) and str(info.value).startswith("policy_kwargs ")
    assert any(why in str(info.value) for why in ("allowed", "has no attribute", "is not a subclass"))


def test_without_a_resolver_names_are_refused():
    assert read_python_literal("dict(norm_obs=True)", "normalize") == {"norm_obs": True}
    with pytest.raises(PgplugError, match=r"normalize 'dict\(norm_obs=nn.ReLU\)': 'nn.ReLU' names no value"):
        read_python_literal("dict(norm_obs=nn.ReLU)", "normalize")
