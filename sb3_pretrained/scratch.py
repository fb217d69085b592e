"""The ``scratch`` variant: a pretrained-backbone zoo config turned into SB3's own NatureCNN.

A fair from-scratch baseline differs from the pretrained run in the encoder only: same env wrappers, frame stack,
observation size and colour, same hyperparameters, same training-batch augmentation. It is therefore derived from the
in-policy config (``zoo_configs/<algo>.yml``, or your own) when a run starts, never written by hand:

- ``policy_kwargs``: ``features_extractor_class``, ``features_extractor_kwargs`` and every other keyword whose value
  refers to ``sb3_pretrained`` are dropped (the policy then builds SB3's ``NatureCNN``); the rest stays;
- ``policy``: the SB3 policy alias the config's policy derives from (``sb3_pretrained.policies.TimmActorCriticPolicy``
  -> ``CnnPolicy``, ``TimmMultiInputActorCriticPolicy`` -> ``MultiInputPolicy``; ``MlpPolicy`` -> ``CnnPolicy``,
  whose extractor is the NatureCNN);
- augmentation: when the backbone's ``features_extractor_kwargs`` have ``augment``, the policy is the matching
  ``sb3_pretrained.policies.NatureCNN*Policy`` with the same ``augment``;
- ``callback``: ``sb3_pretrained`` callbacks (backbone logging, unfreezing, warmup) are dropped;
- an entry whose policy sees backbone embeddings (``FrozenBackboneEmbedding``) cannot be derived from: it is an error.

The strings rl_zoo3 evaluates are parsed with :mod:`ast`, never evaluated.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import yaml

from sb3_pretrained.atomic import write_atomic
from sb3_pretrained.zoo import ConfigError, config_path, load_config

PACKAGE = "sb3_pretrained"
#: policy_kwargs keys that configure the pretrained backbone.
EXTRACTOR_KEYS = ("features_extractor_class", "features_extractor_kwargs")


def _refers_to_package(value: Any) -> bool:
    return PACKAGE in (ast.unparse(value) if isinstance(value, ast.AST) else repr(value))


def _pairs(value: str, where: str) -> list[tuple[str, ast.expr]]:
    """(keyword, expression) of a ``policy_kwargs`` string: ``dict(key=value, ...)`` or ``{'key': value, ...}``."""
    tree = ast.parse(value.strip(), mode="eval").body
    pairs: list[tuple[Any, ast.expr]]
    if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "dict" and not tree.args:
        pairs = [(kw.arg, kw.value) for kw in tree.keywords]
    elif isinstance(tree, ast.Dict):
        pairs = [(k.value if isinstance(k, ast.Constant) else None, v) for k, v in zip(tree.keys, tree.values, strict=True)]
    else:
        pairs = [(None, tree)]
    if any(not isinstance(key, str) for key, _ in pairs):
        raise ConfigError(f"{where}: cannot derive a scratch config from policy_kwargs {value!r}: write dict(key=value, ...).")
    return [(str(key), node) for key, node in pairs]


def _augment(value: Any, where: str) -> Any:
    """The ``augment`` option of the backbone's ``features_extractor_kwargs``, or None."""
    if isinstance(value, dict):
        kwargs = value.get("features_extractor_kwargs")
        return kwargs.get("augment") if isinstance(kwargs, dict) else None
    for key, node in _pairs(value, where):
        if key == "features_extractor_kwargs" and isinstance(node, (ast.Call, ast.Dict)):
            for name, option in _pairs(ast.unparse(node), where):
                if name == "augment":
                    try:
                        return _literal(option)
                    except ValueError as err:
                        raise ConfigError(f"{where}: write 'augment' in policy_kwargs as plain data: {value!r}") from err
    return None


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval`` that also reads ``dict(key=value, ...)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    return ast.literal_eval(node)


def _scratch_policy_kwargs(value: Any, augment: Any, where: str) -> Any:
    """``policy_kwargs`` without the backbone (plus ``augment`` when given), in the source's form; None when empty."""
    extractor = {"features_extractor_kwargs": {"augment": augment}} if augment is not None else {}
    if isinstance(value, dict):
        kept = {k: v for k, v in value.items() if k not in EXTRACTOR_KEYS and not _refers_to_package(v)}
        return {**extractor, **kept} or None
    pairs = [(k, ast.parse(repr(v), mode="eval").body) for k, v in extractor.items()]
    pairs += [(k, v) for k, v in _pairs(value, where) if k not in EXTRACTOR_KEYS and not _refers_to_package(v)]
    return ast.unparse(ast.Call(ast.Name("dict"), [], [ast.keyword(k, v) for k, v in pairs])) if pairs else None


def _scratch_policy(policy: str, algo: str, augmented: bool, where: str) -> str:
    """The SB3 alias ``policy`` derives from (``MlpPolicy`` -> ``CnnPolicy``), or with augmentation the
    ``sb3_pretrained.policies.NatureCNN*Policy`` built on that alias's class."""
    from rl_zoo3.utils import ALGOS

    from sb3_pretrained import policies

    classes = getattr(ALGOS[algo], "policy_aliases", {})
    if "." in policy:
        module_name, _, name = policy.rpartition(".")
        mro = getattr(importlib.import_module(module_name), name).__mro__
        alias = next((a for cls in mro for a, c in classes.items() if c is cls), None)
        if alias is None:
            aliases = ", ".join(classes)
            raise ConfigError(f"{where}: policy '{policy}' derives from none of {algo.upper()}'s policies: {aliases}.")
    else:
        alias = policy
    alias = "CnnPolicy" if alias == "MlpPolicy" else alias
    if not augmented:
        return alias
    for name in policies.__all__:
        if name.startswith("NatureCNN") and getattr(policies, name).__mro__[1] is classes.get(alias):
            return f"{policies.__name__}.{name}"
    raise ConfigError(
        f"{where}: sb3_pretrained.policies has no NatureCNN policy with augmentation for {algo.upper()}'s {alias}; "
        "remove 'augment' or derive the baseline by hand."
    )


def scratch_entry(hyperparams: dict[str, Any], algo: str, where: str) -> dict[str, Any]:
    """One config entry with SB3's NatureCNN in place of the pretrained backbone (see the module docstring).

    :param hyperparams: the entry of the in-policy config (env wrappers, frame stack, hyperparameters)
    :param algo: rl_zoo3 algorithm name, for the policy aliases
    :param where: file and entry, for error messages
    :raises ConfigError: the entry feeds the policy backbone embeddings, or its policy_kwargs cannot be parsed
    """
    if _refers_to_package(hyperparams.get("vec_env_wrapper")):
        raise ConfigError(
            f"{where}: its vec_env_wrapper runs the backbone in the env (an embedding config); the scratch variant is "
            f"derived from an in-policy config such as zoo_configs/{algo}.yml."
        )
    entry = dict(hyperparams)
    augment = _augment(entry.get("policy_kwargs", {}), where)
    if isinstance(entry.get("policy"), str):
        entry["policy"] = _scratch_policy(entry["policy"], algo, augment is not None, where)
    if "policy_kwargs" in entry:
        kwargs = _scratch_policy_kwargs(entry.pop("policy_kwargs"), augment, where)
        if kwargs is not None:
            entry["policy_kwargs"] = kwargs
    if "callback" in entry:
        callbacks = entry.pop("callback")
        kept = [c for c in (callbacks if isinstance(callbacks, list) else [callbacks]) if not _refers_to_package(c)]
        if kept:
            entry["callback"] = kept
    return entry


def write_scratch_config(source: str | Path, algo: str, destination: str | Path) -> Path:
    """Write the scratch config derived from every entry of ``source`` to ``destination`` (atomically).

    :param source: an in-policy config (``zoo_configs/<algo>.yml`` or your own)
    :param algo: rl_zoo3 algorithm name
    :param destination: the YAML file to write; its folder is created
    :return: ``destination``
    """
    config = load_config(source)
    derived = {env: scratch_entry(entry, algo, f"{source} (entry '{env}')") for env, entry in config.items()}
    destination = Path(destination)
    header = (
        f"# Generated by sb3-pretrained from\n#   {source}\n# the same entries with SB3's NatureCNN (CnnPolicy without "
        "features_extractor_class) in place of the\n# pretrained backbone. Rewritten at every run: edit the source.\n"
    )
    write_atomic(destination, header + yaml.safe_dump(derived, sort_keys=False))
    return destination


def variant_config(algo: str, variant: str, folder: str | Path, source: str | Path | None = None) -> Path:
    """The config file a run of ``variant`` uses: ``source`` or the shipped file, or for ``scratch`` the config
    derived from it, written as ``<folder>/<algo>_scratch.yml``.

    :param algo: rl_zoo3 algorithm name
    :param variant: a key of :data:`sb3_pretrained.zoo.VARIANTS`
    :param folder: where a derived config is written
    :param source: your own config instead of the shipped one (for ``scratch``: the in-policy config to derive from)
    :raises ConfigError: unknown variant, no shipped config, or a source scratch cannot be derived from
    """
    path = Path(source) if source is not None else config_path(algo, variant)
    if variant != "scratch":
        return path
    return write_scratch_config(path, algo, Path(folder) / f"{algo}_scratch.yml")
