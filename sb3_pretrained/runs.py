"""rl_zoo3 run folders (``<log folder>/<algo>/<env>_<id>/``): which runs hold a model, which model files load, and
whether a run folder is safe to hand to ``rl_zoo3.enjoy``.

A run folder holds the final model ``<env>.zip``, checkpoints ``rl_model_<steps>_steps.zip`` (``--save-freq``), the
best model ``best_model.zip`` (``--eval-freq``) and ``<env>/`` with ``config.yml``, ``args.yml`` and
``vecnormalize.pkl``. Model files are zip archives of SB3's JSON data and torch state dicts; a file cut short by a
killed save has no zip directory or fails its CRC check, which :func:`model_problem` detects without unpickling
anything.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

from sb3_pretrained.trust import UntrustedError, load_run_yaml
from sb3_pretrained.zoo import TRUST_HINT, ConfigError, check_code

CHECKPOINT_PATTERN = re.compile(r"rl_model_(\d+)_steps\.zip")
#: What every SB3 model archive holds.
MODEL_MEMBERS = ("data", "policy.pth")


class RunFolderError(ValueError):
    """No usable model where one was asked for; the message names the files, why, and what to pass instead."""


def env_folder_name(env_id: str) -> str:
    """The name rl_zoo3 gives an env's folders and files (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    from huggingface_sb3 import EnvironmentName

    return str(EnvironmentName(env_id))


def run_folders(log_folder: str | Path, algo: str, env_id: str) -> dict[int, Path]:
    """The run folders of ``algo`` on ``env_id`` under ``log_folder`` by run id, in increasing order (rl_zoo3's
    ``<env>_<id>`` naming; ``--exp-id`` selects one)."""
    name = env_folder_name(env_id)
    runs = {}
    for path in Path(log_folder, algo).glob(f"{name}_*"):
        run_id = path.name[len(name) + 1 :]
        if path.is_dir() and run_id.isdigit():
            runs[int(run_id)] = path
    return dict(sorted(runs.items()))


def final_model(run: Path, env_id: str) -> Path:
    """The model rl_zoo3 saves when training ends (or is interrupted)."""
    return run / f"{env_folder_name(env_id)}.zip"


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(timesteps, path) of the run's checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in run.glob("rl_model_*_steps.zip") if (m := CHECKPOINT_PATTERN.fullmatch(p.name))]
    return sorted(found)


def model_problem(path: Path) -> str | None:
    """Why ``path`` is not a loadable SB3 model file (missing, cut short, corrupt, not a model), or None."""
    if not path.is_file():
        return "no such file"
    try:
        with zipfile.ZipFile(path) as archive:
            corrupt = archive.testzip()
            missing = [m for m in MODEL_MEMBERS if m not in archive.namelist()]
    except (OSError, zipfile.BadZipFile) as err:
        return f"not a complete zip archive ({err}); a save that was killed leaves such a file"
    if corrupt is not None:
        return f"'{corrupt}' in it is corrupt (CRC check failed)"
    if missing:  # also a cut-short model: the torch files inside are zip archives that zipfile may find instead
        return f"not a complete SB3 model (no {', '.join(missing)} in it); a save that was killed leaves such a file"
    return None


def saved_timesteps(path: Path) -> int | None:
    """``num_timesteps`` of a saved model, read from its JSON data (no unpickling), or None if it cannot be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return int(json.loads(archive.read("data"))["num_timesteps"])
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError):
        return None


def newest_loadable(candidates: Sequence[Path]) -> tuple[Path | None, list[str]]:
    """The first of ``candidates`` (newest first) that loads, and a message for each one skipped before it."""
    skipped: list[str] = []
    for path in candidates:
        problem = model_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(f"skipping {path}: {problem}")
    return None, skipped


def resume_model(path: str | Path, env_id: str) -> tuple[Path, list[str]]:
    """The model file that ``train -i PATH`` continues from: PATH itself when it is a model file, or in a run folder
    the newest of its final model and checkpoints (by saved timesteps) that loads.

    :return: the model file, and a message for each newer file skipped because it does not load
    :raises RunFolderError: PATH does not load (naming the newest file beside it that does), or the folder holds
        no loadable model
    """
    path = Path(path)
    if path.is_dir():
        final = final_model(path, env_id)
        candidates = checkpoints(path)
        if final.is_file():
            candidates.append((saved_timesteps(final) or 0, final))
        found, skipped = newest_loadable([p for _, p in sorted(candidates, reverse=True)])
        if found is None:
            details = "; ".join(skipped) or f"no {final.name} and no rl_model_<steps>_steps.zip in it"
            raise RunFolderError(f"{path} holds no model to continue from ({details}).")
        return found, skipped
    problem = model_problem(path)
    if problem is None:
        return path, []
    alternative, _ = newest_loadable([p for _, p in reversed(checkpoints(path.parent))] + [final_model(path.parent, env_id)])
    hint = f" The newest model beside it that loads: -i {alternative}." if alternative is not None else ""
    raise RunFolderError(f"Cannot continue from {path}: {problem}.{hint} (-i RUN_FOLDER picks the newest that loads.)")


def check_run_folder(run: Path, env_id: str, algo: str) -> None:
    """Check what ``rl_zoo3.enjoy`` reads from a run folder and would run: ``config.yml`` and ``args.yml`` may hold
    only the Python tags rl_zoo3 writes itself, and ``config.yml``'s evaluated strings and import paths only what
    :mod:`sb3_pretrained.trust` allows.

    :raises sb3_pretrained.trust.UntrustedError: a YAML file with another Python tag, or code outside the allow-list
    """
    folder = run / env_folder_name(env_id)
    for name in ("config.yml", "args.yml"):
        if (folder / name).is_file():
            content = load_run_yaml(folder / name)
            if name == "config.yml" and isinstance(content, dict):
                try:
                    check_code(str(folder / name), algo, content)
                except ConfigError as err:
                    trust = "pass --trust-run-folder if you trust this run folder (you trained it yourself)"
                    raise UntrustedError(str(err).replace(TRUST_HINT, trust)) from err
