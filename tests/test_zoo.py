"""The shipped rl_zoo3 configs: each runs under rl_zoo3 itself (train, save, enjoy), and validate_config stops broken
configs before training with a message that names the file, the key and the fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sb3_pretrained import zoo
from sb3_pretrained.tensorboard import INFO_TAG, INPUT_TAG
from tests.helpers import read_events

REPO = Path(__file__).resolve().parents[1]
ATARI_GAMES = ("BreakoutNoFrameskip-v4", "PongNoFrameskip-v4")
#: --hyperparams overrides, for speed only: fewer envs, shorter rollouts, small buffers, learning from the start.
SPEED = {
    "ppo": ["n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"],
    "a2c": ["n_envs:2"],
    "dqn": ["learning_starts:64", "buffer_size:500", "batch_size:8"],
    "qrdqn": ["learning_starts:64", "buffer_size:500", "batch_size:8"],
    "sac": ["learning_starts:64", "buffer_size:500", "batch_size:8", "train_freq:4"],
}


def shipped_cases() -> list[tuple[str, str, str]]:
    """(config file name, algo, env id) for every entry of every shipped config; Atari entries alternate games."""
    cases = []
    for path in zoo.shipped_configs():
        algo = path.stem.split("_")[0]
        for entry in yaml.safe_load(path.read_text()):
            env_id = ATARI_GAMES[len(cases) % 2] if entry == "atari" else entry
            cases.append((path.name, algo, env_id))
    return cases


def zoo_main(monkeypatch, module: str, argv: list[str]) -> None:
    """Run ``python -m rl_zoo3.<module> ARGV`` in this process (its entry point reads sys.argv)."""
    import rl_zoo3.enjoy
    import rl_zoo3.train

    monkeypatch.setattr(sys, "argv", [f"rl_zoo3.{module}", *argv])
    getattr(rl_zoo3, module).__dict__[module]()


def test_variants_name_shipped_files():
    for variant, pattern in zoo.VARIANTS.items():
        for algo in ("ppo", "a2c", "dqn", "qrdqn", "sac"):
            assert zoo.config_path(algo, variant).name == pattern.format(algo=algo)
    with pytest.raises(zoo.ConfigError, match="ships no 'frozen' config for 'td3'.*--conf-file"):
        zoo.config_path("td3", "frozen")


def test_shipped_configs_cover_algos_envs_and_variants():
    cases = {(algo, "atari" if env in ATARI_GAMES else env) for _, algo, env in shipped_cases()}
    for algo in ("ppo", "a2c", "dqn", "qrdqn"):
        assert {(algo, "atari"), (algo, "CarRacing-v3"), (algo, "MiniGrid-Empty-5x5-v0")} <= cases
    assert ("sac", "CarRacing-v3") in cases
    assert len(zoo.shipped_configs()) == 15  # 5 algorithms x 3 variants


@pytest.mark.parametrize(("name", "algo", "env_id"), shipped_cases())
def test_shipped_config_validates(name, algo, env_id):
    zoo.validate_config(zoo.CONFIG_DIR / name, algo, env_id)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "algo", "env_id"), shipped_cases())
def test_shipped_config_trains_and_enjoys_under_rl_zoo3(monkeypatch, capsys, tmp_path, name, algo, env_id):
    logs, tensorboard = tmp_path / "logs", tmp_path / "tb"
    zoo_main(monkeypatch, "train", [
        "--algo", algo, "--env", env_id, "--conf-file", str(zoo.CONFIG_DIR / name), "-n", "256", "--seed", "0",
        "-f", str(logs), "-tb", str(tensorboard), "--eval-freq", "-1", "--hyperparams", *SPEED[algo],
    ])  # fmt: skip
    model = logs / algo / f"{env_id}_1" / f"{env_id}.zip"
    assert model.is_file()
    tags = read_events(tensorboard).Tags()
    assert INPUT_TAG in tags["images"] and f"{INFO_TAG}/text_summary" in tags["tensors"]

    capsys.readouterr()
    zoo_main(monkeypatch, "enjoy", ["--algo", algo, "--env", env_id, "-f", str(logs), "--no-render", "-n", "40"])
    assert f"Loading {model}" in capsys.readouterr().out


@pytest.mark.slow
def test_config_runs_unchanged_as_a_zoo_command(tmp_path):
    """The literal command of the README and the config comments, in a fresh process."""
    command = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "MiniGrid-Empty-5x5-v0",
        "--conf-file", "zoo_configs/ppo_embedding.yml", "-n", "64", "-f", str(tmp_path), "--eval-freq", "-1",
        "--hyperparams", "n_envs:1",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ppo" / "MiniGrid-Empty-5x5-v0_1" / "MiniGrid-Empty-5x5-v0.zip").is_file()


def write_config(tmp_path: Path, entry: dict, env_id: str = "MiniGrid-Empty-5x5-v0") -> Path:
    base = yaml.safe_load((zoo.CONFIG_DIR / "ppo.yml").read_text())["MiniGrid-Empty-5x5-v0"]
    path = tmp_path / "my_ppo.yml"
    path.write_text(yaml.safe_dump({env_id: {**base, **entry}}))
    return path


def test_unknown_key_names_file_key_and_fix(tmp_path):
    path = write_config(tmp_path, {"n_step": 32})
    with pytest.raises(zoo.ConfigError) as err:
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")
    message = str(err.value)
    assert str(path) in message and "unknown key 'n_step'" in message and "Did you mean 'n_steps'" in message


def test_unknown_key_in_overrides(tmp_path):
    with pytest.raises(zoo.ConfigError, match="unknown key 'learning_start'.*'learning_starts'"):
        zoo.validate_config(zoo.CONFIG_DIR / "dqn.yml", "dqn", "MiniGrid-Empty-5x5-v0", overrides=["learning_start:10"])


def test_key_the_zoo_sets_itself(tmp_path):
    path = write_config(tmp_path, {"seed": 3})
    with pytest.raises(zoo.ConfigError, match="unknown key 'seed'.*rl_zoo3 sets it itself"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"n_steps": "64"}, "'n_steps' must be int, got '64' \\(str\\)"),
        ({"learning_rate": "5e-4"}, "'learning_rate' must be a number or 'lin_<number>'.*write !!float 5e-4"),
        ({"n_envs": 0}, "'n_envs' must be an int >= 1"),
        ({"env_kwargs": ["continuous", False]}, "'env_kwargs' must be a mapping"),
        ({"policy": "CnnPolicyy"}, "PPO has no policy 'CnnPolicyy'. Did you mean 'CnnPolicy'"),
    ],
)
def test_wrong_type_names_key_and_expected_type(tmp_path, entry, expected):
    path = write_config(tmp_path, entry)
    with pytest.raises(zoo.ConfigError, match=f"{path}.*{expected}"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")


def test_unknown_backbone_in_policy_kwargs(tmp_path):
    path = write_config(tmp_path, {
        "policy_kwargs": "dict(features_extractor_class=importlib.import_module('sb3_pretrained').TimmExtractor,"
                         " features_extractor_kwargs=dict(model_name='efficientnet_lite9', frozen=True))",
    })  # fmt: skip
    with pytest.raises(zoo.ConfigError, match="policy_kwargs: Unknown timm model 'efficientnet_lite9'.*efficientnet_lite0"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")


def test_unknown_argument_in_extractor_kwargs_given_as_yaml(tmp_path):
    path = write_config(tmp_path, {
        "policy": "sb3_pretrained.policies.TimmActorCriticPolicy",
        "policy_kwargs": {"features_extractor_kwargs": {"model_name": "efficientnet_lite0", "frozn": True}},
    })  # fmt: skip
    with pytest.raises(zoo.ConfigError, match="TimmExtractor has no argument 'frozn'. Did you mean 'frozen'"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")
    path = write_config(tmp_path, {
        "policy": "sb3_pretrained.policies.TimmActorCriticPolicy",
        "policy_kwargs": {"features_extractor_kwargs": {"model_name": "efficientnet_lite9"}},
    })  # fmt: skip
    with pytest.raises(zoo.ConfigError, match="policy_kwargs: Unknown timm model 'efficientnet_lite9'"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")


def test_shipped_configs_name_no_importlib():
    for path in zoo.shipped_configs():
        assert "importlib" not in path.read_text(), path


def test_unknown_backbone_and_argument_in_wrapper_kwargs(tmp_path):
    entry = yaml.safe_load((zoo.CONFIG_DIR / "ppo_embedding.yml").read_text())["MiniGrid-Empty-5x5-v0"]
    wrapper = "sb3_pretrained.wrappers.FrozenBackboneEmbedding"
    path = write_config(tmp_path, {**entry, "vec_env_wrapper": [{wrapper: {"model_name": "resnet_9000"}}]})
    with pytest.raises(zoo.ConfigError, match=f"vec_env_wrapper '{wrapper}': Unknown timm model 'resnet_9000'"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")
    kwargs = {"model_name": "efficientnet_lite0", "framestack": 4}
    path = write_config(tmp_path, {**entry, "vec_env_wrapper": [{wrapper: kwargs}]})
    with pytest.raises(zoo.ConfigError, match="has no argument 'framestack'. Did you mean 'frame_stack'"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")


def test_bare_class_name_in_policy_kwargs_would_be_a_name_error(tmp_path):
    path = write_config(tmp_path, {"policy_kwargs": "dict(features_extractor_class=TimmExtractor)"})
    with pytest.raises(zoo.ConfigError, match="'TimmExtractor'.*importlib.import_module\\('sb3_pretrained'\\).TimmExtractor"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")


def test_missing_env_dependency_names_the_pip_package(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ale_py" else find_spec(name, *a))
    with pytest.raises(zoo.ConfigError, match="'PongNoFrameskip-v4' \\(atari\\) needs ale-py.*pip install ale-py"):
        zoo.validate_config(zoo.CONFIG_DIR / "dqn.yml", "dqn", "PongNoFrameskip-v4")


def test_missing_entry_suggests_close_env_ids():
    with pytest.raises(zoo.ConfigError, match="no entry for env 'MiniGrid-Empty-6x6-v0'.*'MiniGrid-Empty-5x5-v0'"):
        zoo.validate_config(zoo.CONFIG_DIR / "ppo.yml", "ppo", "MiniGrid-Empty-6x6-v0")


def test_validation_never_evaluates_config_strings(tmp_path):
    marker = tmp_path / "evaluated"
    path = write_config(tmp_path, {"policy_kwargs": f"__import__('pathlib').Path({str(marker)!r}).touch()"})
    zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0", trust=True)  # parses fine: only rl_zoo3 would run it
    assert not marker.exists()


@pytest.mark.parametrize(
    ("key", "value", "offending"),
    [
        ("policy_kwargs", "__import__('os').system('touch pwned') or dict(net_arch=[64])", "__import__('os')"),
        ("normalize", "dict(norm_obs=False, norm_reward=os.system('touch pwned') == 0)", "os.system('touch pwned') == 0"),
    ],
)
def test_code_in_evaluated_strings_needs_trust(tmp_path, key, value, offending):
    path = write_config(tmp_path, {key: value})
    with pytest.raises(zoo.ConfigError, match=f"'{key}' contains .*{re.escape(offending)}.*--trust-config"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")
    zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0", trust=True)


def test_import_paths_outside_trusted_packages_are_neither_imported_nor_run(tmp_path, capsys):
    sys.modules.pop("this", None)
    path = write_config(tmp_path, {"callback": ["this.Anything"]})
    with pytest.raises(zoo.ConfigError, match="callback 'this.Anything' imports 'this', which is outside.*--trust-config"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")
    assert "this" not in sys.modules and "Beautiful is better" not in capsys.readouterr().out
    with pytest.raises(zoo.ConfigError, match="module 'this' has no 'Anything'"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0", trust=True)  # trusted: imported and checked
    path = write_config(tmp_path, {"callback": [{"rl_zoo3.utils.get_class_by_name": {"name": "os.system"}}]})
    with pytest.raises(zoo.ConfigError, match="names function 'rl_zoo3.utils.get_class_by_name', not a class"):
        zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")


@pytest.mark.slow
def test_finetune_config_unfreezes_under_rl_zoo3(monkeypatch, tmp_path):
    """The finetune config's callbacks, built by the zoo from YAML (int and string timestep keys), unfreeze the
    backbone on schedule; the saved model loads with its grouped optimizer."""
    config = yaml.safe_load((zoo.CONFIG_DIR / "ppo_finetune.yml").read_text())
    entry = config["MiniGrid-Empty-5x5-v0"]
    callbacks = {next(iter(c)) if isinstance(c, dict) else c: c for c in entry["callback"]}
    callbacks["sb3_pretrained.GradualUnfreezing"]["sb3_pretrained.GradualUnfreezing"]["schedule"] = {
        64: 1, "1.28e2": "stage2", 192: "all"}  # fmt: skip
    callbacks["sb3_pretrained.LRWarmup"]["sb3_pretrained.LRWarmup"].update(steps=32, restart_at=[64, 128, 192])
    path = tmp_path / "ppo_finetune.yml"
    path.write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": entry}))
    zoo.validate_config(path, "ppo", "MiniGrid-Empty-5x5-v0")
    zoo_main(monkeypatch, "train", [
        "--algo", "ppo", "--env", "MiniGrid-Empty-5x5-v0", "--conf-file", str(path), "-n", "256", "--seed", "0",
        "-f", str(tmp_path / "logs"), "-tb", str(tmp_path / "tb"), "--eval-freq", "-1",
        "--hyperparams", "n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1",
    ])  # fmt: skip
    events = read_events(tmp_path / "tb")
    stages = [int(e.value) for e in events.Scalars("finetune/unfrozen_stages")]
    # rollouts end at 64, 128, 192, 256 steps: the top stage, stage2-stage3, then all 4 (the entry reads feature map 2:
    # stem and stages 1-3 exist)
    assert stages == [1, 2, 4, 4]
    trainable = [e.value for e in events.Scalars("finetune/trainable_params")]
    assert trainable[0] < trainable[1] < trainable[2] == trainable[3]

    from stable_baselines3 import PPO

    model = PPO.load(tmp_path / "logs" / "ppo" / "MiniGrid-Empty-5x5-v0_1" / "MiniGrid-Empty-5x5-v0.zip")
    assert [g["name"] for g in model.policy.optimizer.param_groups][:2] == ["head", "backbone.stem"]
