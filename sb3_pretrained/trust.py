"""What a config or a run folder may make rl_zoo3 run without the user saying they trust it.

rl_zoo3 runs code from its inputs in three ways: it ``eval``\\s some config strings (``policy_kwargs``, ``normalize``,
...) in its ``exp_manager`` module's namespace; it imports the modules that ``policy``, ``env_wrapper``,
``vec_env_wrapper`` and ``callback`` name and calls what they name with the config's arguments; and it reads a run
folder's ``config.yml`` and ``args.yml`` with ``yaml.UnsafeLoader``, which builds whatever Python object a tag names.
Without trust, sb3-pretrained lets through only:

- evaluated strings made of literals, ``dict``/``list``/``tuple``/... calls, classes of ``torch.nn`` and
  ``torch.optim`` (``nn.ReLU``, ``th.optim.Adam``), the SB3 classes the zoo's namespace names (``RMSpropTFLike``,
  ``HerReplayBuffer``, ...) and the classes of this package (``importlib.import_module('sb3_pretrained').X``);
- import paths to classes in :data:`TRUSTED_PACKAGES`, checked without importing anything else;
- YAML whose only Python tags are the two rl_zoo3 writes itself (``OrderedDict``, ``tuple``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: Packages whose modules a config may import (and whose classes it may call) without trust: this package, SB3,
#: sb3-contrib, rl_zoo3 and the env packages the shipped configs use. Importing any other module runs its code.
TRUSTED_PACKAGES = ("sb3_pretrained", "stable_baselines3", "sb3_contrib", "rl_zoo3", "gymnasium", "minigrid", "ale_py")
#: Builtins an evaluated string may call: they only build data.
DATA_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "float", "int", "bool", "str")
#: Modules whose classes an evaluated string may name and call.
CLASS_MODULES = ("torch.nn", "torch.optim", "stable_baselines3", "sb3_contrib", "sb3_pretrained")
ALLOWED_IN_EXPRESSIONS = (
    "literals, dict/list/tuple/float/int/bool calls, torch.nn and torch.optim classes (nn.ReLU, th.optim.Adam), "
    "the SB3 classes rl_zoo3's namespace names (RMSpropTFLike, HerReplayBuffer, ...) and this package's classes "
    "(importlib.import_module('sb3_pretrained').TimmExtractor)"
)


class UntrustedError(ValueError):
    """An input that would run code the allow-list does not cover; the message names it and the trust flag."""


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _allowed_class(obj: Any) -> bool:
    return inspect.isclass(obj) and _in(obj.__module__, CLASS_MODULES)


def _reference(node: ast.expr, namespace: Mapping[str, Any]) -> Any:
    """What a name or attribute chain refers to (modules and classes only, no private names), or None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id) if not node.id.startswith("_") else None
    if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
        base = _reference(node.value, namespace) if not isinstance(node.value, ast.Call) else _import(node.value)
        return getattr(base, node.attr, None) if isinstance(base, types.ModuleType) else None
    return None


def _import(call: ast.Call) -> types.ModuleType | None:
    """``importlib.import_module('<module of a trusted package>')``, imported; None for anything else."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "import_module" and isinstance(func.value, ast.Name)):
        return None
    if func.value.id != "importlib" or len(call.args) != 1 or call.keywords:
        return None
    name = call.args[0].value if isinstance(call.args[0], ast.Constant) else None
    if not (isinstance(name, str) and _in(name, TRUSTED_PACKAGES)):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_number(node.operand)
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def disallowed_part(tree: ast.Expression, namespace: Mapping[str, Any]) -> ast.expr | None:
    """The first part of an expression rl_zoo3 would evaluate in ``namespace`` that the allow-list does not cover
    (see the module docstring), or None when all of it is allowed."""
    return _disallowed(tree.body, namespace)


def _disallowed(node: ast.expr, namespace: Mapping[str, Any]) -> ast.expr | None:
    children: list[ast.expr | None]
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        children = list(node.elts)
    elif isinstance(node, ast.Dict):
        children = [*node.keys, *node.values]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        children = [node.operand]
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        return None if _is_number(node.left) and _is_number(node.right) else node
    elif isinstance(node, ast.Call):
        builtin = isinstance(node.func, ast.Name) and node.func.id in DATA_BUILTINS and node.func.id not in namespace
        if not (builtin or _allowed_class(_reference(node.func, namespace))):
            return node
        children = [*node.args, *(keyword.value for keyword in node.keywords)]
    elif isinstance(node, (ast.Name, ast.Attribute)) and _allowed_class(_reference(node, namespace)):
        return None
    else:
        return node
    return next((bad for child in children if child is not None and (bad := _disallowed(child, namespace))), None)


def untrusted_import(name: str) -> str | None:
    """Why importing the import path ``name`` (``package.module.Class``) and calling it needs trust, or None when it
    is a class of a trusted package. Modules outside :data:`TRUSTED_PACKAGES` are never imported here (only their
    top-level package is looked up), since importing runs their code.
    """
    module_name, _, attr = name.rpartition(".")
    top = module_name.split(".")[0]
    if not _in(module_name, TRUSTED_PACKAGES):
        found = importlib.util.find_spec(top) is not None if top else False
        where = "" if found else f" (and no package '{top}' is installed)"
        return (
            f"imports '{module_name}', which is outside the packages trusted without --trust-config{where}; importing "
            "a module runs its code"
        )
    try:
        target = getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return None  # the caller reports what cannot be imported
    if target is not None and not inspect.isclass(target):
        return f"names {type(target).__name__} '{name}', not a class; rl_zoo3 would call it with the config's arguments"
    return None


class _RunFolderLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus the two Python tags rl_zoo3 writes in a run folder: ``OrderedDict`` and ``tuple``."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[Any, Any]:
    if isinstance(node, yaml.SequenceNode):
        args = loader.construct_sequence(node, deep=True)
        if len(args) == 1 and isinstance(args[0], list) and all(isinstance(p, list) and len(p) == 2 for p in args[0]):
            return dict(args[0])
    raise yaml.constructor.ConstructorError(None, None, "an OrderedDict not written by rl_zoo3", node.start_mark)


_RunFolderLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
_RunFolderLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node, deep=True))
)


def load_run_yaml(path: Path) -> Any:
    """A run folder's YAML file (``config.yml``, ``args.yml``) read without running code: only the Python tags
    rl_zoo3 writes itself are allowed.

    :raises UntrustedError: the file has any other Python tag (rl_zoo3's ``yaml.UnsafeLoader`` would run it)
    """
    try:
        return yaml.load(path.read_text(), Loader=_RunFolderLoader)  # SafeLoader plus two data-only tags
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark or err.context_mark
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise UntrustedError(
            f"{path}{line}: {err.problem}. rl_zoo3 reads this file with yaml.UnsafeLoader, which would build that "
            "Python object, running code. Use run folders you trained yourself, or pass --trust-run-folder if you "
            "trust this one."
        ) from err
    except yaml.YAMLError as err:
        raise UntrustedError(f"{path} is not valid YAML: {err}") from err
