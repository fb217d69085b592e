"""The scratch variant: every shipped in-policy config turns into SB3's NatureCNN with the same observations and
hyperparameters, whatever form the backbone takes in the config, and `sb3-pretrained train --variant scratch` runs."""

from __future__ import annotations

import pytest
import yaml
from rl_zoo3.utils import ALGOS as ZOO_ALGOS
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy
from stable_baselines3.dqn.policies import CnnPolicy as DQNCnnPolicy

import sb3_pretrained
from sb3_pretrained import policies, zoo
from sb3_pretrained.augmentation import AugmentedNatureCNN
from sb3_pretrained.cli import main
from sb3_pretrained.scratch import scratch_entry, variant_config, write_scratch_config
from tests.helpers import image_env

ALGOS = ("ppo", "a2c", "dqn", "qrdqn", "sac")


@pytest.mark.parametrize("algo", ALGOS)
def test_shipped_configs_derive_natural_cnn_with_everything_else_equal(tmp_path, algo):
    source = yaml.safe_load(zoo.config_path(algo, "frozen").read_text())
    path = variant_config(algo, "scratch", tmp_path)
    assert path == tmp_path / f"{algo}_scratch.yml"
    derived = yaml.safe_load(path.read_text())
    assert list(derived) == list(source)
    for env, entry in derived.items():
        kwargs = source[env].get("policy_kwargs")
        augment = kwargs.get("features_extractor_kwargs", {}).get("augment") if isinstance(kwargs, dict) else None
        if augment:  # the baseline gets the same training-batch augmentation
            assert entry["policy"] == "sb3_pretrained.policies.NatureCNNActorCriticPolicy"
            assert entry["policy_kwargs"] == {"features_extractor_kwargs": {"augment": augment}}
        else:
            assert "sb3_pretrained" not in yaml.safe_dump(entry)
            assert entry["policy"] == "CnnPolicy"
        backbone_keys = ("policy", "policy_kwargs", "callback")
        assert {k: v for k, v in entry.items() if k not in backbone_keys} == {
            k: v for k, v in source[env].items() if k not in backbone_keys
        }
        zoo.validate_config(path, algo, "PongNoFrameskip-v4" if env == "atari" else env)
    if algo == "sac":  # other policy_kwargs stay
        assert derived["CarRacing-v3"]["policy_kwargs"] == {"share_features_extractor": True}


@pytest.mark.parametrize(
    ("policy_kwargs", "expected"),
    [
        (
            "dict(features_extractor_class=importlib.import_module('sb3_pretrained').TimmExtractor,"
            " features_extractor_kwargs=dict(model_name='efficientnet_lite0', frozen=True), net_arch=[64])",
            "dict(net_arch=[64])",
        ),
        (
            "{'features_extractor_class': sb3_pretrained.TimmExtractor, 'normalize_images': False}",
            "dict(normalize_images=False)",
        ),
        ("dict(optimizer_class=importlib.import_module('sb3_pretrained').grouped(th.optim.Adam))", None),
        ({"features_extractor_kwargs": {"model_name": "resnet18"}, "net_arch": [32]}, {"net_arch": [32]}),
    ],
)
def test_backbone_keywords_leave_policy_kwargs(policy_kwargs, expected):
    entry = scratch_entry({"policy": "CnnPolicy", "policy_kwargs": policy_kwargs}, "ppo", "test")
    assert entry.get("policy_kwargs") == expected


@pytest.mark.parametrize(
    ("algo", "base", "alias"),
    [
        ("ppo", ActorCriticCnnPolicy, "CnnPolicy"),
        ("ppo", ActorCriticPolicy, "CnnPolicy"),  # MlpPolicy's extractor flattens images: NatureCNN instead
        ("ppo", MultiInputActorCriticPolicy, "MultiInputPolicy"),
        ("dqn", DQNCnnPolicy, "CnnPolicy"),
    ],
)
def test_package_policy_class_becomes_its_sb3_alias(monkeypatch, algo, base, alias):
    monkeypatch.setattr(sb3_pretrained, "TimmTestPolicy", type("TimmTestPolicy", (base,), {}), raising=False)
    entry = {"policy": "sb3_pretrained.TimmTestPolicy", "policy_kwargs": "dict(backbone='efficientnet_lite0')", "n_envs": 4}
    assert scratch_entry(entry, algo, "test") == {"policy": alias, "policy_kwargs": "dict(backbone='efficientnet_lite0')",
                                                  "n_envs": 4}  # fmt: skip


@pytest.mark.parametrize(
    ("algo", "entry", "expected"),
    [
        (  # the shipped form: a policy class and plain data
            "ppo",
            {"policy": "sb3_pretrained.policies.TimmActorCriticPolicy",
             "policy_kwargs": {"features_extractor_kwargs": {"model_name": "efficientnet_lite0", "augment": {"shift": 4}}}},
            {"policy": "sb3_pretrained.policies.NatureCNNActorCriticPolicy",
             "policy_kwargs": {"features_extractor_kwargs": {"augment": {"shift": 4}}}},
        ),
        (  # an evaluated string naming the extractor class
            "dqn",
            {"policy": "CnnPolicy", "policy_kwargs": "dict(features_extractor_class=importlib.import_module('sb3_pretrained')"
             ".TimmExtractor, features_extractor_kwargs=dict(model_name='resnet18', augment=dict(shift=4)), net_arch=[64])"},
            {"policy": "sb3_pretrained.policies.NatureCNNDQNPolicy",
             "policy_kwargs": "dict(features_extractor_kwargs={'augment': {'shift': 4}}, net_arch=[64])"},
        ),
    ],
)  # fmt: skip
def test_augmentation_is_kept_with_the_nature_cnn_policies(algo, entry, expected):
    assert scratch_entry(entry, algo, "test") == expected


def test_embedding_configs_and_odd_policy_kwargs_are_refused(tmp_path):
    with pytest.raises(
        zoo.ConfigError, match="embedding config.*derived from an in-policy config such as zoo_configs/ppo.yml"
    ):
        write_scratch_config(zoo.config_path("ppo", "embedding"), "ppo", tmp_path / "x.yml")
    with pytest.raises(zoo.ConfigError, match="cannot derive a scratch config from policy_kwargs.*write dict"):
        scratch_entry({"policy": "CnnPolicy", "policy_kwargs": "make_kwargs()"}, "ppo", "test")
    augmented = {"features_extractor_kwargs": {"model_name": "efficientnet_lite0", "augment": {"shift": 4}}}
    with pytest.raises(zoo.ConfigError, match="no NatureCNN policy with augmentation for PPO's MultiInputPolicy"):
        scratch_entry({"policy": "sb3_pretrained.policies.TimmMultiInputActorCriticPolicy", "policy_kwargs": augmented},
                      "ppo", "test")  # fmt: skip
    assert not (tmp_path / "x.yml").exists()


def test_train_variant_scratch_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--variant", "scratch", "-n", "64", "--no-progress", "--eval-freq", "-1", "--seed", "0"]
    assert main([*args, "--hyperparams", "n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"]) == 0
    from stable_baselines3 import PPO
    from stable_baselines3.common.torch_layers import NatureCNN

    model = PPO.load(tmp_path / "logs/ppo/MiniGrid-Empty-5x5-v0_1/MiniGrid-Empty-5x5-v0.zip")
    assert type(model.policy.features_extractor) is NatureCNN
    assert model.policy.net_arch == []  # CnnPolicy's own network: NatureCNN straight into the action and value heads
    assert model.observation_space.shape == (3, 56, 56)  # MiniGrid's RGB view, as the frozen config sees it
    assert (tmp_path / "logs/configs/ppo_scratch.yml").is_file()


@pytest.mark.parametrize("algo", ["ppo", "dqn", "qrdqn", "sac"])
def test_augmented_nature_cnn_policy_has_cnn_policys_architecture(algo):
    # SB3 gives NatureCNN itself no hidden layers before the heads (net_arch=[]) and any other extractor a [64, 64] MLP;
    # the augmented scratch baseline must be plain CnnPolicy's network plus the augmentation, nothing else.
    augmented = {"ppo": policies.NatureCNNActorCriticPolicy, "dqn": policies.NatureCNNDQNPolicy,
                 "qrdqn": policies.NatureCNNQRDQNPolicy, "sac": policies.NatureCNNSACPolicy}[algo]
    env = image_env(discrete=algo != "sac", size=64)
    kwargs = dict(buffer_size=100) if algo != "ppo" else {}
    plain = ZOO_ALGOS[algo]("CnnPolicy", env, device="cpu", seed=0, **kwargs).policy
    jittered = ZOO_ALGOS[algo](augmented, env, device="cpu", seed=0, policy_kwargs=dict(
        features_extractor_kwargs=dict(augment={"shift": 4})), **kwargs).policy
    shapes = lambda policy: {name: tuple(p.shape) for name, p in policy.state_dict().items()}  # noqa: E731
    assert shapes(jittered) == shapes(plain)
    assert all(m.augment is not None for m in jittered.modules() if isinstance(m, AugmentedNatureCNN))


def test_nature_cnn_policy_keeps_a_net_arch_given():
    policy = ZOO_ALGOS["ppo"](policies.NatureCNNActorCriticPolicy, image_env(size=64), device="cpu", seed=0,
                              policy_kwargs=dict(net_arch=[32])).policy
    assert policy.net_arch == [32]
    assert isinstance(policy.features_extractor, AugmentedNatureCNN)
