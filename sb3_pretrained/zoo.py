"""sb3-pretrained's rl_zoo3 configs: where they live, and checking a config before the zoo runs it.

The configs are rl_zoo3 hyperparameter files (``zoo_configs/<algo>[_<variant>].yml``, env ids as top-level keys).
rl_zoo3 ``eval``\\s some of their strings itself (``policy_kwargs``, ``normalize``, ``replay_buffer_kwargs``, ...);
:func:`validate_config` never does: it reads the YAML with ``yaml.safe_load``, parses those strings with
:mod:`ast`, and checks what it can before any run folder exists:

- the env id has an entry (or the ``atari`` / ``default`` entry the zoo falls back to);
- the env's packages are installed (``ale_py``, ``Box2D``, ``minigrid``, ...);
- every key is one rl_zoo3 or the algorithm takes, with a value of the right type;
- import paths (``policy``, ``env_wrapper``, ``vec_env_wrapper``, ``callback``) resolve, and their keyword
  arguments exist;
- strings the zoo evaluates parse, and use only names the zoo's namespace defines;
- every ``model_name`` is a timm model;
- unless the config is trusted (``trust=True``, ``--trust-config``), the config runs no code beyond what
  :mod:`sb3_pretrained.trust` allows: evaluated strings hold data and known classes only, import paths name classes
  of trusted packages, and no other module is imported to check it.
"""

from __future__ import annotations

import ast
import collections.abc
import difflib
import functools
import importlib
import importlib.util
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sb3_pretrained.backbones import check_model_name
from sb3_pretrained.trust import ALLOWED_IN_EXPRESSIONS, disallowed_part, untrusted_import

CONFIG_DIR = Path(__file__).parent / "zoo_configs"
#: ``--variant`` of the CLI -> file name pattern in :data:`CONFIG_DIR`.
VARIANTS = {
    "embedding": "{algo}_embedding.yml",  # frozen backbone in a VecEnv wrapper; the policy sees embeddings
    "frozen": "{algo}.yml",  # frozen TimmExtractor inside the policy
    "finetune": "{algo}_finetune.yml",  # TimmExtractor unfrozen gradually (GradualUnfreezing + LRWarmup)
    "scratch": "{algo}.yml",  # derived from the frozen config at run time: SB3's NatureCNN (sb3_pretrained.scratch)
}

#: Keys rl_zoo3 reads itself (the rest go to the algorithm's constructor).
ZOO_KEYS = (
    "n_envs", "n_timesteps", "env_wrapper", "vec_env_wrapper", "callback", "frame_stack", "normalize",
    "env_kwargs", "monitor_kwargs", "noise_type", "noise_std",
)  # fmt: skip
#: Constructor arguments the zoo passes itself: a config setting them makes the constructor fail.
ZOO_PASSED = ("self", "env", "tensorboard_log", "seed", "verbose", "device", "_init_setup_model")
#: String values rl_zoo3 eval()s in rl_zoo3.exp_manager's namespace.
EVALUATED_KEYS = ("policy_kwargs", "replay_buffer_class", "replay_buffer_kwargs", "normalize", "monitor_kwargs")
#: Keys whose value the zoo turns into a schedule: a number, or "lin_<number>" (linear decay to 0).
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
IMPORT_KEYS = ("env_wrapper", "vec_env_wrapper", "callback")
#: How the messages about code in a config end.
TRUST_HINT = "pass --trust-config (validate_config(..., trust=True)) if you trust this config"

_ENV_PACKAGES = {
    "atari": (("ale_py", "ale-py"), ("cv2", "opencv-python-headless")),
    "box2d": (("Box2D", "box2d"), ("pygame", "pygame")),
    "minigrid": (("minigrid", "minigrid"),),
}


def _did_you_mean(word: str, options: Sequence[str], n: int = 3, render=repr) -> str:
    """`` Did you mean 'x', 'y'?`` for the options closest to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(options), n=n)
    return f" Did you mean {', '.join(render(c) for c in close)}?" if close else ""


class ConfigError(ValueError):
    """A zoo config that would fail (or silently misbehave) under rl_zoo3; the message names the file, the key
    and the fix."""


def config_path(algo: str, variant: str = "frozen") -> Path:
    """The shipped config file for ``algo`` and ``variant`` (see :data:`VARIANTS`).

    :raises ConfigError: no such variant, or no shipped config for this algorithm
    """
    if variant not in VARIANTS:
        raise ConfigError(f"Unknown variant '{variant}'. Variants: {', '.join(VARIANTS)}.")
    path = CONFIG_DIR / VARIANTS[variant].format(algo=algo)
    if not path.is_file():
        shipped = sorted({p.stem.split("_")[0] for p in shipped_configs()})
        raise ConfigError(
            f"sb3-pretrained ships no '{variant}' config for '{algo}' (expected {path.name}). Configs exist for: "
            f"{', '.join(shipped)}. Pass your own with --conf-file FILE.yml."
        )
    return path


def shipped_configs() -> list[Path]:
    """Every config file shipped with the package."""
    return sorted(CONFIG_DIR.glob("*.yml"))


def load_config(path: str | Path) -> dict[str, Any]:
    """The YAML file as a dict of env id -> hyperparameters (``yaml.safe_load``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist.")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise ConfigError(f"{path} must map env ids to dicts of hyperparameters, as rl_zoo3's hyperparams/*.yml do.")
    return content


def env_family(env_id: str) -> str | None:
    """``"atari"``, ``"box2d"``, ``"minigrid"`` or None, from the registry when the id is registered and from its
    name otherwise (an env whose package is missing is not registered)."""
    import gymnasium as gym

    spec = gym.envs.registry.get(env_id)
    entry_point = str(spec.entry_point) if spec is not None else ""
    if "ale_py" in entry_point or env_id.startswith("ALE/") or re.search(r"(NoFrameskip|Deterministic)-v[04]$", env_id):
        return "atari"
    box2d_names = ("CarRacing", "LunarLander", "LunarLanderContinuous", "BipedalWalker")
    if "box2d" in entry_point or env_id.split("-")[0] in box2d_names:
        return "box2d"
    if "minigrid" in entry_point or env_id.startswith(("MiniGrid-", "BabyAI-")):
        return "minigrid"
    return None


def check_env_dependencies(env_id: str) -> None:
    """Raise a ConfigError naming what to ``pip install`` when a package ``env_id`` needs is missing."""
    family = env_family(env_id)
    packages = _ENV_PACKAGES.get(family, ()) if family is not None else ()
    missing = [pip for module, pip in packages if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(
            f"Env '{env_id}' ({family}) needs {', '.join(missing)}, which is not installed. "
            f"Fix: pip install {' '.join(missing)}   (or every supported env: pip install 'sb3-pretrained[envs]')."
        )


def config_entry(config: dict[str, Any], env_id: str, where: str) -> tuple[str, dict[str, Any]]:
    """The entry rl_zoo3 uses for ``env_id``: its own, else ``atari`` for Atari games, else ``default``."""
    if env_id in config:
        return env_id, config[env_id]
    if env_family(env_id) == "atari" and "atari" in config:
        return "atari", config["atari"]
    if "default" in config:
        return "default", config["default"]
    hint = _did_you_mean(env_id, list(config))
    raise ConfigError(f"{where} has no entry for env '{env_id}'.{hint} Entries: {', '.join(config)}.")


def valid_keys(algo: str) -> tuple[list[str], list[str]]:
    """(keys rl_zoo3 reads, constructor arguments of ``algo`` a config may set)."""
    return list(ZOO_KEYS), [name for name in _algo_parameters(algo) if name not in ZOO_PASSED]


def validate_config(
    path: str | Path, algo: str, env_id: str, overrides: Sequence[str] = (), trust: bool = False
) -> None:
    """Check the entry of ``env_id`` in the rl_zoo3 config ``path`` for ``algo``, without evaluating anything.

    :param path: YAML config file
    :param algo: rl_zoo3 algorithm name (``ppo``, ``dqn``, ...)
    :param env_id: gymnasium env id
    :param overrides: the zoo's ``--hyperparams`` items (``key:value``); their keys are checked
    :param trust: the config may run any code (evaluated strings, imports of any module); False: only what
        :mod:`sb3_pretrained.trust` allows, and modules outside its trusted packages are not imported to check them
    :raises ConfigError: the first problem found, naming the file, the key and the fix
    """
    config = load_config(path)
    entry, hyperparams = config_entry(config, env_id, str(path))
    where = f"{path} (entry '{entry}')"
    check_env_dependencies(env_id)
    zoo_keys, algo_keys = valid_keys(algo)
    for key in [*hyperparams, *(item.split(":", 1)[0] for item in overrides)]:
        if key not in zoo_keys and key not in algo_keys:
            hint = _did_you_mean(key, zoo_keys + algo_keys)
            passed = " rl_zoo3 sets it itself (use its command-line flag)." if key in ZOO_PASSED else ""
            raise ConfigError(
                f"{where}: unknown key '{key}'.{hint}{passed} Keys rl_zoo3 reads: {', '.join(zoo_keys)}. "
                f"Keys {algo.upper()} takes: {', '.join(algo_keys)}."
            )
    for required in ("policy", "n_timesteps"):
        if required not in hyperparams:
            raise ConfigError(f"{where}: '{required}' is missing; rl_zoo3 needs it in every entry.")
    for key, value in hyperparams.items():
        _check_value(where, algo, key, value, trust)
    _check_extractor_kwargs(where, hyperparams, trust)


def check_code(where: str, algo: str, hyperparams: Mapping[str, Any]) -> None:
    """Check only what in a config entry runs code (evaluated strings, import paths) against the allow-list of
    :mod:`sb3_pretrained.trust`, e.g. the ``config.yml`` that ``rl_zoo3.enjoy`` reads from a run folder.

    :raises ConfigError: the first part not allowed, naming it and the trust flag
    """
    for key, value in hyperparams.items():
        if key in (*EVALUATED_KEYS, *IMPORT_KEYS, "policy"):
            _check_value(where, algo, key, value, trust=False)


def _check_extractor_kwargs(where: str, hyperparams: Mapping[str, Any], trust: bool) -> None:
    """``policy_kwargs.features_extractor_kwargs`` given as YAML, for a policy whose default extractor is known:
    every key must be an argument of that extractor."""
    policy, policy_kwargs = hyperparams.get("policy"), hyperparams.get("policy_kwargs")
    if not (isinstance(policy, str) and "." in policy and isinstance(policy_kwargs, dict)):
        return
    kwargs = policy_kwargs.get("features_extractor_kwargs")
    if not isinstance(kwargs, dict) or "features_extractor_class" in policy_kwargs:
        return
    default = inspect.signature(_resolve(where, "policy", policy, trust)).parameters.get("features_extractor_class")
    if default is None or not isinstance(default.default, type):
        return
    extractor = default.default
    accepted = [name for name in inspect.signature(extractor).parameters if name != "observation_space"]
    for name in kwargs:
        if name not in accepted:
            raise ConfigError(
                f"{where}: policy_kwargs: features_extractor_kwargs: {extractor.__name__} has no argument '{name}'."
                f"{_did_you_mean(name, accepted)} Its arguments: {', '.join(accepted)}."
            )


@functools.cache
def _algo_parameters(algo: str) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``algo``'s constructor, with its parent's where it passes ``**kwargs`` on (``DrACPPO``)."""
    parameters: dict[str, inspect.Parameter] = {}
    for cls in _algo_class(algo).__mro__:
        if "__init__" not in vars(cls):
            continue
        own = _signature(cls.__init__).parameters.values()  # type: ignore[misc]  # a class's own __init__
        parameters.update({p.name: p for p in own if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                           and p.name not in parameters})  # fmt: skip
        if not any(p.kind is p.VAR_KEYWORD for p in own):
            break
    return parameters


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """``function``'s signature with its annotations as types, also where its module writes them as strings
    (``from __future__ import annotations``, as DrACPPO's); as strings where they do not evaluate."""
    try:
        return inspect.signature(function, eval_str=True)
    except Exception:  # a name only imported for type checking, a newer syntax: check with what can be read
        return inspect.signature(function)


def _algo_class(algo: str) -> type[Any]:
    from rl_zoo3.utils import ALGOS

    if algo not in ALGOS:
        raise ConfigError(f"Unknown algorithm '{algo}'. rl_zoo3 algorithms: {', '.join(ALGOS)}.")
    return ALGOS[algo]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_error(where: str, key: str, expected: str, value: Any) -> ConfigError:
    hint = ""
    if isinstance(value, str) and re.fullmatch(r"[-+]?[\d.]+e[-+]?\d+", value.strip(), re.IGNORECASE):
        hint = f" YAML reads {value} as a string: write !!float {value} (or the number in full)."
    return ConfigError(f"{where}: '{key}' must be {expected}, got {value!r} ({type(value).__name__}).{hint}")


_SCALAR_KEYS = ("n_envs", "frame_stack", "n_timesteps", "noise_std", *SCHEDULE_KEYS)


def _check_scalar(where: str, key: str, value: Any) -> None:
    """Check one of ``_SCALAR_KEYS``: a count, a positive number or a schedule."""
    if key in ("n_envs", "frame_stack"):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise _type_error(where, key, "an int >= 1", value)
    elif key in ("n_timesteps", "noise_std"):
        if not (_number(value) and value > 0):
            raise _type_error(where, key, "a number > 0", value)
    elif key in SCHEDULE_KEYS:
        if not (_number(value) or (isinstance(value, str) and re.fullmatch(r"lin_[-+]?[\d.]+(e[-+]?\d+)?", value))):
            raise _type_error(where, key, "a number or 'lin_<number>' (linear decay to 0)", value)


def _check_value(where: str, algo: str, key: str, value: Any, trust: bool) -> None:
    if key in _SCALAR_KEYS:
        _check_scalar(where, key, value)
    elif key == "env_kwargs":
        if not isinstance(value, dict):
            raise _type_error(where, key, "a mapping of keyword arguments", value)
    elif key in IMPORT_KEYS:
        for name, kwargs in _import_specs(where, key, value):
            _check_import(where, key, name, kwargs, trust)
    elif key == "policy":
        _check_policy(where, algo, value, trust)
    elif key in EVALUATED_KEYS:
        _check_evaluated(where, key, value, trust)
    elif key == "noise_type":
        if not isinstance(value, str):
            raise _type_error(where, key, "a string ('normal' or 'ornstein-uhlenbeck')", value)
    else:
        hint = _algo_parameters(algo)[key].annotation
        if not _matches(value, hint):
            raise _type_error(where, key, _describe(hint), value)


def _check_evaluated(where: str, key: str, value: Any, trust: bool) -> None:
    """A key rl_zoo3 evaluates when it is a string: an expression, or data (a mapping; ``normalize`` also a bool)."""
    if isinstance(value, str):
        _check_expression(where, key, value, trust)
    elif key == "normalize" and isinstance(value, bool):
        return
    elif not isinstance(value, dict):
        raise _type_error(where, key, "a Python expression string (rl_zoo3 evaluates it) or a mapping", value)
    else:
        _check_model_names(where, key, _model_names_in_data(value))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a constructor annotation (YAML gives lists for tuples; unknown hints pass)."""
    if hint in (inspect.Parameter.empty, Any):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _number(value)
    if hint is str:
        return isinstance(value, str)
    if hint in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=False))
        return True
    if hint is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if origin in (type, collections.abc.Callable):
        return False  # YAML cannot express a class or a function; rl_zoo3 converts only the keys handled above
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _import_specs(where: str, key: str, value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(import path, kwargs) of each entry of an ``env_wrapper`` / ``vec_env_wrapper`` / ``callback`` value."""
    usage = "an import path, or a list of import paths and one-key mappings {path: {kwarg: value}}"
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            yield item, {}
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item)), str):
            name, kwargs = next(iter(item.items()))
            if kwargs is not None and not isinstance(kwargs, dict):
                raise _type_error(where, f"{key}: {name}", "a mapping of keyword arguments", kwargs)
            yield name, kwargs or {}
        else:
            raise _type_error(where, key, usage + " (check the indentation)", item)


def _resolve(where: str, key: str, name: str, trust: bool) -> Any:
    """What the import path ``name`` names, imported only when trusted (see :func:`sb3_pretrained.trust.untrusted_import`)."""
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise ConfigError(f"{where}: {key} '{name}' is not an import path (package.module.Name).")
    reason = None if trust else untrusted_import(name)
    if reason is not None:
        raise ConfigError(f"{where}: {key} '{name}' {reason}; {TRUST_HINT}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{where}: {key} '{name}': cannot import '{module_name}' ({err}).") from err
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        hint = _did_you_mean(attr, public, render=lambda c: f"{module_name}.{c}")
        raise ConfigError(f"{where}: {key} '{name}': module '{module_name}' has no '{attr}'.{hint}")
    return getattr(module, attr)


def _check_import(where: str, key: str, name: str, kwargs: dict[str, Any], trust: bool) -> None:
    target = _resolve(where, key, name, trust)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = list(params)[0 if key == "callback" else 1 :]  # wrappers take the env first
        for kwarg in kwargs:
            if kwarg not in accepted:
                hint = _did_you_mean(kwarg, accepted)
                raise ConfigError(
                    f"{where}: {key} '{name}' has no argument '{kwarg}'.{hint} Its arguments: {', '.join(accepted)}."
                )
    _check_model_names(where, f"{key} '{name}'", _model_names_in_data(kwargs))


def _check_policy(where: str, algo: str, value: Any, trust: bool) -> None:
    if not isinstance(value, str):
        raise _type_error(where, "policy", "a policy name (CnnPolicy, MlpPolicy, ...) or an import path", value)
    if "." in value:
        _resolve(where, "policy", value, trust)
        return
    aliases = list(getattr(_algo_class(algo), "policy_aliases", {}))
    if value not in aliases:
        hint = _did_you_mean(value, aliases, n=1)
        raise ConfigError(f"{where}: {algo.upper()} has no policy '{value}'.{hint} Policies: {', '.join(aliases)}.")


def _check_expression(where: str, key: str, source: str, trust: bool) -> None:
    """Parse a string the zoo will eval: syntax, free names against the zoo's namespace, the allow-list (unless
    trusted), backbone names."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"{where}: '{key}' is not a valid Python expression ({err.msg}): {source!r}") from err
    bound = {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    bound |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    namespace = _zoo_namespace()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound | namespace:
            raise ConfigError(
                f"{where}: '{key}' uses the name '{node.id}', which rl_zoo3's eval namespace does not define "
                f"(NameError at startup). For the extractor, name the policy by its import path instead (e.g. policy: "
                f"sb3_pretrained.policies.TimmActorCriticPolicy) and give features_extractor_kwargs as YAML; otherwise "
                f"import it inside the string, e.g. importlib.import_module('sb3_pretrained').{node.id} (or, with "
                f"--trust-config, importlib.import_module('package.module').{node.id})."
            )
    bad = None if trust else disallowed_part(tree, _zoo_module_namespace())
    if bad is not None:
        raise ConfigError(
            f"{where}: '{key}' contains {ast.unparse(bad)!r}, which is not allowed in a string rl_zoo3 evaluates unless "
            f"you trust the config. Allowed: {ALLOWED_IN_EXPRESSIONS}. Write it as plain YAML, or {TRUST_HINT}."
        )
    _check_model_names(where, key, _model_names_in_ast(tree))


def _zoo_module_namespace() -> dict[str, Any]:
    """The globals of ``rl_zoo3.exp_manager``, where rl_zoo3 evaluates config strings."""
    import rl_zoo3.exp_manager

    return vars(rl_zoo3.exp_manager)


def _zoo_namespace() -> set[str]:
    import builtins

    return set(_zoo_module_namespace()) | set(vars(builtins))


def _model_names_in_ast(tree: ast.AST) -> list[str]:
    """String values given to ``model_name`` as a keyword or a dict key, anywhere in the expression."""
    names = []
    for node in ast.walk(tree):
        pairs: list[tuple[Any, ast.expr]] = []
        if isinstance(node, ast.keyword):
            pairs = [(node.arg, node.value)]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(node.keys, node.values, strict=False) if isinstance(k, ast.Constant)]
        names += [v.value for k, v in pairs if k == "model_name" and isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return names


def _model_names_in_data(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == "model_name" and isinstance(v, str)]
        return found + [n for v in value.values() for n in _model_names_in_data(v)]
    if isinstance(value, list):
        return [n for v in value for n in _model_names_in_data(v)]
    return []


def _check_model_names(where: str, key: str, names: list[str]) -> None:
    for name in names:
        try:
            check_model_name(name)
        except ValueError as err:
            raise ConfigError(f"{where}: {key}: {err}") from err
