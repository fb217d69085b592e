"""Every SB3 / sb3-contrib algorithm with a features extractor: build, learn, save, load offline, same actions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sb3_contrib import ARS, QRDQN, TQC, TRPO, CrossQ, MaskablePPO, RecurrentPPO  # noqa: F401
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

from sb3_pretrained import TimmExtractor, weights
from tests.helpers import TINY_MODEL, backbone_matches, image_env

OFF_POLICY = dict(learning_starts=64, buffer_size=500, batch_size=16, train_freq=16, gradient_steps=1)
# algorithm, policy, discrete actions, algorithm kwargs, extractor copies the algorithm builds
ALGORITHMS = [
    (PPO, "CnnPolicy", True, dict(n_steps=64, batch_size=32, n_epochs=2), 1),
    (A2C, "CnnPolicy", True, dict(n_steps=8), 1),
    (TRPO, "CnnPolicy", True, dict(n_steps=64, batch_size=32, n_critic_updates=2, cg_max_steps=3), 1),
    (RecurrentPPO, "CnnLstmPolicy", True, dict(n_steps=64, batch_size=32, n_epochs=2), 1),
    (MaskablePPO, "CnnPolicy", True, dict(n_steps=64, batch_size=32, n_epochs=2), 1),
    (DQN, "CnnPolicy", True, dict(OFF_POLICY, target_update_interval=32), 2),
    (QRDQN, "CnnPolicy", True, dict(OFF_POLICY, target_update_interval=32), 2),
    (SAC, "CnnPolicy", False, OFF_POLICY, 3),
    (TQC, "CnnPolicy", False, OFF_POLICY, 3),
    (TD3, "CnnPolicy", False, dict(OFF_POLICY, policy_delay=1), 4),
    (DDPG, "CnnPolicy", False, OFF_POLICY, 4),
    (CrossQ, "MlpPolicy", False, OFF_POLICY, 2),
]


def extractors_of(model) -> list[TimmExtractor]:
    return [m for m in model.policy.modules() if isinstance(m, TimmExtractor)]


@pytest.mark.parametrize("algo,policy,discrete,kwargs,copies", ALGORITHMS, ids=[a[0].__name__ for a in ALGORITHMS])
def test_learn_save_load_predict(algo, policy, discrete, kwargs, copies, tiny_weights, tmp_path, monkeypatch):
    env = image_env(discrete=discrete, masked=algo is MaskablePPO)
    policy_kwargs = dict(
        features_extractor_class=TimmExtractor,
        features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=str(tiny_weights), frozen=True, input_size=32),
    )
    model = algo(policy, env, policy_kwargs=policy_kwargs, seed=0, device="cpu", **kwargs)

    copies_built = {id(e) for e in extractors_of(model)}
    assert len(copies_built) == copies
    # Every copy is the checkpoint bit for bit (PPO & co. apply orthogonal init by default), read from disk once.
    assert all(backbone_matches(e.backbone, tiny_weights) for e in extractors_of(model))
    assert sum(weights.READ_COUNT.values()) == 1

    model.learn(256)
    # Frozen: weights and BatchNorm statistics are still the checkpoint's. Target networks follow the online
    # ones through SB3's polyak_update, whose (1 - tau) * x + tau * x rounds in the last bit.
    for name, extractor in model.policy.named_modules():
        if isinstance(extractor, TimmExtractor):
            assert backbone_matches(extractor.backbone, tiny_weights, exact="target" not in name), name

    observations = np.stack([env.observation_space.sample() for _ in range(8)])
    before, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "model.zip")

    # Loading needs no pretrained weights: the file is gone and nothing else is read.
    tiny_weights.unlink()
    weights.clear_cache()
    loaded = algo.load(tmp_path / "model.zip", device="cpu")
    assert weights.READ_COUNT == {}
    assert all(e.encoder.weight_source == "the saved model's state dict" for e in extractors_of(loaded))
    after, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(before, after)
    for original, restored in zip(extractors_of(model), extractors_of(loaded), strict=False):
        for (key, a), b in zip(original.state_dict().items(), restored.state_dict().values(), strict=False):
            assert torch.equal(a, b), key
    assert all(e.frozen for e in extractors_of(loaded))
