"""DrACPPO: PPO's loss on the observations the agent acted on, augmentation as DrAC's regularizer."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from torch.distributions import kl_divergence

from sb3_pretrained import DrACPPO
from sb3_pretrained.augmentation import ImageAugmentation, augmentation_off
from sb3_pretrained.policies import NatureCNNActorCriticPolicy, TimmActorCriticPolicy
from sb3_pretrained.sb3_internals import distribution_and_values
from tests.helpers import TINY_MODEL, image_env, needs_minigrid, read_events


class SquareEnv(gym.Env):
    """36x36 RGB frames of one white square at a random place on black (a shift moves it), 3 actions, no reward."""

    observation_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self._frame(), {}

    def step(self, action):
        self.steps += 1
        return self._frame(), 0.0, False, self.steps >= 10, {}

    def _frame(self):
        frame = np.zeros((36, 36, 3), np.uint8)
        row, col = self.np_random.integers(0, 28, 2)
        frame[row : row + 8, col : col + 8] = 255
        return frame


def _model(algo, tmp_path, augment=None, policy=TimmActorCriticPolicy, **kwargs):
    extractor = dict(model_name=TINY_MODEL, pretrained=False, frozen=True, input_size=32)
    if policy is NatureCNNActorCriticPolicy:
        extractor = {}
    if augment is not None:
        extractor["augment"] = augment
    # Without SB3's orthogonal init (action logits scaled by 0.01) the initial policy depends on its input.
    settings = dict(n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu") | kwargs
    model = algo(policy, SquareEnv(), policy_kwargs=dict(features_extractor_kwargs=extractor, ortho_init=False), **settings)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    return model


def _logged(tmp_path) -> dict[str, float]:
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert len(lines) == 3, lines  # header, first rollout, second rollout (with the first update's losses)
    return {key: float(value) for key, value in zip(lines[0].split(","), lines[-1].split(","), strict=True) if value}


def test_ratio_is_one_at_the_first_minibatch(tmp_path):
    """One rollout, one epoch, one minibatch: nothing has moved the policy yet, so PPO's ratio must be 1. SB3's PPO
    takes it on shifted inputs and logs a KL; DrACPPO takes it on the inputs the agent acted on."""
    ppo = _model(PPO, tmp_path / "ppo", augment={"shift": 4}, policy=NatureCNNActorCriticPolicy)
    ppo.learn(128)  # SB3 logs an update at the next rollout: the last row is the first update's
    drac = _model(DrACPPO, tmp_path / "drac", augment={"shift": 4}, policy=NatureCNNActorCriticPolicy)
    drac.learn(128)
    ppo_logged, drac_logged = _logged(tmp_path / "ppo"), _logged(tmp_path / "drac")
    assert ppo_logged["train/approx_kl"] > 1e-7  # 5.7e-6 here
    assert drac_logged["train/approx_kl"] < 1e-10 and drac_logged["train/clip_fraction"] == 0.0
    assert drac_logged["train/drac_policy_loss"] > 0 and drac_logged["train/drac_value_loss"] >= 0
    assert "train/drac_policy_loss" not in ppo_logged


def _shift_kl(model, obs: torch.Tensor) -> float:
    """Mean KL(pi(. | o) || pi(. | shift(o))) over ``obs``, the same shifts every call."""
    policy = model.policy
    policy.set_training_mode(False)
    torch.manual_seed(123)
    shifted = ImageAugmentation(shift=4).train()(obs)
    with torch.no_grad():
        plain, _ = distribution_and_values(policy, obs)
        moved, _ = distribution_and_values(policy, shifted)
    return float(kl_divergence(plain.distribution, moved.distribution).mean())


def _square_batch(count: int = 64) -> torch.Tensor:
    env = SquareEnv()
    env.reset(seed=7)
    return torch.as_tensor(np.stack([env.step(0)[0] for _ in range(count)])).permute(0, 3, 1, 2).float()


def test_drac_losses_are_drac_on_an_augmented_pass(tmp_path):
    """G_pi is -log pi(a' | aug(o)) for a' drawn from the plain distribution, G_V the squared change of the value,
    both on a pass with the augmentation on; no gradient reaches the plain values."""
    model = _model(DrACPPO, tmp_path, augment={"shift": 4}, policy=NatureCNNActorCriticPolicy)
    policy, obs = model.policy, _square_batch()
    policy.set_training_mode(True)
    with augmentation_off(policy):
        distribution, values = distribution_and_values(policy, obs)
    plain_values = values.detach().requires_grad_(True)
    torch.manual_seed(5)
    policy_term, value_term = model.drac_losses(obs, distribution, plain_values)
    (policy_term + value_term).backward()
    assert plain_values.grad is None  # V(o) held fixed
    torch.manual_seed(5)  # the same draws: the actions first, then the shifts
    sampled = distribution.get_actions(deterministic=False)
    with torch.no_grad():
        augmented, augmented_values = distribution_and_values(policy, obs)
    torch.testing.assert_close(policy_term.detach(), -augmented.log_prob(sampled).mean())
    torch.testing.assert_close(value_term.detach(), 0.5 * (values.detach() - augmented_values).pow(2).mean())
    assert value_term > 1e-8  # the shift moved the squares, and the value with them
    with augmentation_off(policy):
        _, unshifted_value_term = model.drac_losses(obs, distribution, plain_values)
    assert unshifted_value_term == 0.0


def test_update_loss_is_ppos_plus_the_weighted_regularizer(tmp_path):
    """One minibatch, one epoch: SB3 logs that minibatch's total loss and each term, so the sum pins the sign and
    the weight of the regularizer in what is minimized."""
    model = _model(DrACPPO, tmp_path, augment={"shift": 4}, policy=NatureCNNActorCriticPolicy, drac_coef=0.7,
                   ent_coef=0.01, vf_coef=0.5)  # fmt: skip
    model.learn(128)
    logged = _logged(tmp_path)
    ppo = logged["train/policy_gradient_loss"] + 0.01 * logged["train/entropy_loss"] + 0.5 * logged["train/value_loss"]
    drac = logged["train/drac_policy_loss"] + logged["train/drac_value_loss"]
    assert drac > 0.1
    assert logged["train/loss"] == pytest.approx(ppo + 0.7 * drac, rel=1e-5, abs=1e-6)


def test_regularizer_makes_the_policy_shift_invariant(tmp_path):
    """The same training with and without a strong regularizer, from the same initial policy: PPO's own losses (the
    value loss through the shared CNN, the policy loss on SquareEnv's zero rewards) make the policy sensitive to
    where the square is; with the regularizer it ends far less so. (What the terms are, and their sign in the
    loss, are pinned by the two tests above; a regularizer that did nothing would fail here.)"""
    obs = _square_batch()
    kls = {}
    for coef in (0.0, 10.0):
        model = _model(DrACPPO, tmp_path / str(coef), augment={"shift": 4}, policy=NatureCNNActorCriticPolicy,
                       drac_coef=coef, n_epochs=4, batch_size=32, learning_rate=1e-3)  # fmt: skip
        before = _shift_kl(model, obs)
        model.learn(256)
        kls[coef] = (before, _shift_kl(model, obs))
    assert kls[0.0][0] == kls[10.0][0]  # same seed, same initial policy
    assert kls[0.0][1] > 10 * kls[0.0][0], kls  # PPO's losses alone made it shift-sensitive
    assert kls[10.0][1] < 0.2 * kls[0.0][1], kls


def test_without_augmentation_it_warns_and_trains_as_ppo(tmp_path):
    ppo = _model(PPO, tmp_path / "ppo", n_epochs=2, batch_size=32)
    ppo.learn(128)
    with pytest.warns(UserWarning, match="augments nothing"):
        drac = _model(DrACPPO, tmp_path / "drac", n_epochs=2, batch_size=32)
    drac.learn(128)
    for (name, trained), (_, same) in zip(ppo.policy.state_dict().items(), drac.policy.state_dict().items(), strict=True):
        assert torch.equal(trained, same), name


def test_plain_passes_use_the_feature_cache_and_augmented_ones_do_not(tmp_path):
    model = _model(DrACPPO, tmp_path, augment={"shift": 4})
    encoder = model.policy.features_extractor.encoder
    model.policy.set_training_mode(True)
    with torch.no_grad():
        model.policy.features_extractor(torch.rand(6, 3, 36, 36))
        assert len(encoder.feature_cache) == 0
        with augmentation_off(model.policy):
            model.policy.features_extractor(torch.rand(5, 3, 36, 36))
    assert len(encoder.feature_cache) == 5
    assert encoder.augment.training  # back on after the block


def test_save_load_keeps_drac_coef_and_predictions(tmp_path):
    model = _model(DrACPPO, tmp_path, augment={"shift": 4}, drac_coef=0.25)
    model.learn(64)
    model.save(tmp_path / "drac.zip")
    loaded = DrACPPO.load(tmp_path / "drac.zip", device="cpu")
    assert loaded.drac_coef == 0.25
    obs = SquareEnv().reset(seed=1)[0]
    assert model.predict(obs, deterministic=True)[0] == loaded.predict(obs, deterministic=True)[0]
    for (name, saved), (_, restored) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items(),
                                            strict=True):  # fmt: skip
        assert torch.equal(saved, restored), name


def test_bad_drac_coef_is_refused(tmp_path):
    for bad in (-0.1, "0.1", True):
        with pytest.raises(ValueError, match="drac_coef must be a number >= 0"):
            DrACPPO("CnnPolicy", image_env(size=36), drac_coef=bad)
    DrACPPO("CnnPolicy", image_env(size=36), n_steps=16, batch_size=16).save(tmp_path / "drac.zip")
    with pytest.raises(ValueError, match="drac_coef must be a number >= 0"):
        DrACPPO.load(tmp_path / "drac.zip", custom_objects={"drac_coef": -1.0})


@pytest.mark.parametrize("share", [True, False])
def test_distribution_and_values_match_evaluate_actions(share):
    model = PPO(NatureCNNActorCriticPolicy, image_env(size=36), n_steps=16, batch_size=16, seed=0, device="cpu",
                policy_kwargs=dict(share_features_extractor=share))  # fmt: skip
    obs, actions = torch.rand(8, 3, 36, 36) * 255, torch.randint(0, 3, (8,))
    with torch.no_grad():
        values, log_prob, entropy = model.policy.evaluate_actions(obs, actions)
        distribution, same_values = distribution_and_values(model.policy, obs)
    torch.testing.assert_close(same_values, values)
    torch.testing.assert_close(distribution.log_prob(actions), log_prob)
    torch.testing.assert_close(distribution.entropy(), entropy)
    with torch.no_grad():
        distribution_and_values(model.policy, torch.zeros(8, 3, 36, 36))  # another call leaves this one alone
    torch.testing.assert_close(distribution.log_prob(actions), log_prob)


@needs_minigrid
def test_ppo_drac_trains_from_a_zoo_config(tmp_path):
    """``--algo ppo_drac`` from the command line, with a PPO config plus ``drac_coef``: validated, trained, logged,
    saved as a DrACPPO."""
    from rl_zoo3.utils import ALGOS

    from sb3_pretrained.cli import main

    conf = tmp_path / "drac.yml"
    conf.write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": {
        "env_wrapper": [{"minigrid.wrappers.RGBImgPartialObsWrapper": {"tile_size": 8}}, "minigrid.wrappers.ImgObsWrapper"],
        "policy": "sb3_pretrained.policies.NatureCNNActorCriticPolicy", "n_envs": 2, "n_timesteps": 128, "n_steps": 32,
        "n_epochs": 1, "batch_size": 64, "drac_coef": 0.5,
        "policy_kwargs": {"features_extractor_kwargs": {"augment": {"shift": 4}}},
    }}))  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--algo", "ppo_drac", "--env", "MiniGrid-Empty-5x5-v0", "--conf-file", str(conf), "-f",
                     str(tmp_path / "logs"), "-tb", str(tmp_path / "tb"), "--no-progress", "--eval-freq", "-1",
                     "--seed", "0"]) == 0  # fmt: skip
    assert not [w for w in caught if "augments nothing" in str(w.message)]
    saved = tmp_path / "logs" / "ppo_drac" / "MiniGrid-Empty-5x5-v0_1" / "MiniGrid-Empty-5x5-v0.zip"
    model = ALGOS["ppo_drac"].load(saved, device="cpu")
    assert isinstance(model, DrACPPO) and model.drac_coef == 0.5
    assert "train/drac_policy_loss" in read_events(tmp_path / "tb").Tags()["scalars"]


def test_configs_for_ppo_drac_take_ppos_keys_and_a_numeric_drac_coef(tmp_path):
    from sb3_pretrained import zoo

    assert set(zoo.valid_keys("ppo_drac")[1]) == {*zoo.valid_keys("ppo")[1], "drac_coef"}
    entry = yaml.safe_load((zoo.CONFIG_DIR / "ppo.yml").read_text())["MiniGrid-Empty-5x5-v0"]
    conf = tmp_path / "drac.yml"
    conf.write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": {**entry, "drac_coef": "strong"}}))
    with pytest.raises(zoo.ConfigError, match="'drac_coef' must be float, got 'strong'"):
        zoo.validate_config(conf, "ppo_drac", "MiniGrid-Empty-5x5-v0")
    conf.write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": {**entry, "drac_coef": 0.3}}))
    zoo.validate_config(conf, "ppo_drac", "MiniGrid-Empty-5x5-v0")


def test_ppo_drac_is_registered_like_ppo():
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    assert ALGOS["ppo_drac"] is DrACPPO and ALGOS["ppo"] is PPO
    assert HYPERPARAMS_SAMPLER["ppo_drac"] is HYPERPARAMS_SAMPLER["ppo"]
    assert HYPERPARAMS_CONVERTER["ppo_drac"] is HYPERPARAMS_CONVERTER["ppo"]
