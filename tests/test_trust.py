"""What configs and run folders may run without trust: the allow-list for strings rl_zoo3 evaluates, import paths
checked without importing untrusted modules, and run-folder YAML without Python tags."""

from __future__ import annotations

import ast
import sys

import pytest

from sb3_pretrained.trust import UntrustedError, disallowed_part, load_run_yaml, untrusted_import
from sb3_pretrained.zoo import _zoo_module_namespace
from tests.helpers import write_run_folder


def disallowed(source: str) -> str | None:
    bad = disallowed_part(ast.parse(source, mode="eval"), _zoo_module_namespace())
    return None if bad is None else ast.unparse(bad)


@pytest.mark.parametrize(
    "source",
    [
        "dict(net_arch=[256, 256])",
        "{'norm_obs': False, 'norm_reward': True}",
        "dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-05), activation_fn=nn.ReLU)",
        "dict(optimizer_class=th.optim.AdamW, net_arch=dict(pi=[64], vf=[64]), log_std_init=-2 * 1.5, ortho_init=not True)",
        "dict(features_extractor_class=importlib.import_module('sb3_pretrained').TimmExtractor)",
        "HerReplayBuffer",
        "dict(clip_obs=float('inf'), handle_timeout_termination=False, n=int(1e6))",
    ],
)
def test_data_and_known_classes_are_allowed(source):
    assert disallowed(source) is None


@pytest.mark.parametrize(
    ("source", "offending"),
    [
        ("__import__('os').system('touch pwned') or dict()", "__import__('os').system('touch pwned') or dict()"),
        ("dict(a=__import__('os').system('x'))", "__import__('os').system('x')"),
        ("dict(a=os.system('x'))", "os.system('x')"),
        ("dict(a=th.load('weights.pt'))", "th.load('weights.pt')"),
        ("dict(a=get_class_by_name('os.system'))", "get_class_by_name('os.system')"),
        ("dict(a=importlib.import_module('os').system)", "importlib.import_module('os').system"),
        ("dict(a=nn.ReLU.__init__.__globals__)", "nn.ReLU.__init__.__globals__"),
        ("dict(a=(lambda: 0)())", "(lambda: 0)()"),
        ("dict(a=[0] * 10 ** 9)", "[0] * 10 ** 9"),
        ("dict(a=th.package.PackageImporter('x.pt'))", "th.package.PackageImporter('x.pt')"),
        ("dict(a=eval('1'))", "eval('1')"),
    ],
)
def test_code_is_refused_naming_the_expression(source, offending):
    assert disallowed(source) == offending


def test_import_paths_outside_trusted_packages_are_not_imported():
    sys.modules.pop("this", None)
    assert "outside the packages trusted" in untrusted_import("this.Anything")
    assert "this" not in sys.modules  # looked up, not imported (importing it prints the Zen of Python)
    assert "no package 'nosuchpackage' is installed" in untrusted_import("nosuchpackage.Wrapper")
    assert "not a class" in untrusted_import("rl_zoo3.utils.get_class_by_name")  # would import any module
    assert untrusted_import("sb3_pretrained.wrappers.FrozenBackboneEmbedding") is None
    assert untrusted_import("stable_baselines3.common.atari_wrappers.AtariWrapper") is None


def test_run_folder_yaml_as_rl_zoo3_writes_it_loads(tmp_path):
    run = write_run_folder(tmp_path, "ppo", "CartPole-v1", 1, model=False)
    config = load_run_yaml(run / "CartPole-v1" / "config.yml")
    assert config == {"n_envs": 1, "n_timesteps": 1000.0, "policy": "MlpPolicy", "train_freq": (1, "step")}
    assert load_run_yaml(run / "CartPole-v1" / "args.yml")["env"] == "CartPole-v1"


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/name:os.system",
        "!!python/object/apply:collections.OrderedDict {{args: [[]], state: {{a: 1}}}}",
    ],
)
def test_run_folder_yaml_with_python_tags_is_refused_unrun(tmp_path, tag):
    marker = tmp_path / "pwned"
    path = tmp_path / "config.yml"
    path.write_text("n_envs: 1\nextra: " + tag.format(marker=marker) + "\n")
    with pytest.raises(UntrustedError, match=r"config.yml \(line 2\).*--trust-run-folder"):
        load_run_yaml(path)
    assert not marker.exists()
