"""The flat buffers the Ray backend moves weights and gradients in (no Ray needed): a round trip keeps every
value, and a tensor a state_dict lists under several names (SB3's shared CNN features extractor) travels once."""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy

from pgplug.plugins.a3c.ray_store import FlatLayout


def test_a_round_trip_keeps_every_value_and_dtype() -> None:
    source = [th.arange(6.0).reshape(2, 3), th.tensor([7, 8], dtype=th.int64), th.tensor([0.5])]
    target = [th.zeros(2, 3), th.zeros(2, dtype=th.int64), th.zeros(1)]
    layout = FlatLayout(source)
    buffers = layout.pack(source)
    assert [b.dtype for b in buffers] == [np.float32, np.int64]
    assert [b.size for b in buffers] == [7, 2]
    layout.unpack_into(buffers, target)
    for got, want in zip(target, source, strict=True):
        assert th.equal(got, want)


def test_a_shared_features_extractor_travels_once_and_every_name_gets_it() -> None:
    image, actions = spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(6)
    th.manual_seed(0)
    source, target = (ActorCriticCnnPolicy(image, actions, lambda _: 7e-4) for _ in range(2))
    names = list(source.state_dict())
    assert any(n.startswith("pi_features_extractor.") for n in names)  # SB3 lists the shared extractor thrice
    state = list(source.state_dict().values())
    params = sum(p.numel() for p in source.parameters())
    layout = FlatLayout(state)
    buffers = layout.pack(state)
    assert sum(b.size for b in buffers) == params  # not three times the extractor
    layout.unpack_into(buffers, list(target.state_dict().values()))
    for name, tensor in target.state_dict().items():
        assert th.equal(tensor, source.state_dict()[name]), name
