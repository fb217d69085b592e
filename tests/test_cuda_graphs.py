"""GraphedForward: batches padded to power-of-two buckets, one capture per bucket and signature, graphs dropped when
the weights change, eager runs where a graph cannot be right. On CPU a fake backend stands in for CUDA graphs; the
tests at the end run the real one and skip without a GPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from sb3_pretrained import FrozenBackboneEmbedding, TimmExtractor
from sb3_pretrained.cuda_graphs import Function, GraphedForward, Replay, bucket_size
from sb3_pretrained.encoder import BackboneEncoder
from tests.helpers import TINY_MODEL, image_env

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class FakeCapture:
    """A capture backend that records the static inputs it was given and the inputs of every replay; a replay
    calls the function on the static input, as a graph recomputes it."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.replayed: list[torch.Tensor] = []

    def __call__(self, function: Function, static_input: torch.Tensor) -> Replay:
        self.shapes.append(tuple(static_input.shape))

        def replay() -> torch.Tensor:
            self.replayed.append(static_input.clone())
            return function(static_input)

        return replay


def _module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5)).eval()


def _graphed(module: nn.Module, max_batch: int = 8) -> tuple[GraphedForward, FakeCapture]:
    fake = FakeCapture()
    return GraphedForward(module, max_batch=max_batch, capture=fake, device_types=("cpu",)), fake


def test_bucket_is_the_next_power_of_two():
    assert [bucket_size(n) for n in (1, 2, 3, 4, 5, 8, 9, 100, 256)] == [1, 2, 4, 4, 8, 8, 16, 128, 256]
    for bad in (0, 3, 100, True, 8.0):
        with pytest.raises(ValueError, match=rf"max_batch must be a power of two >= 1.*got {bad!r}"):
            GraphedForward(_module(), max_batch=bad)


def test_batches_are_padded_to_their_bucket_and_padding_never_leaks():
    module = _module()
    graphs, fake = _graphed(module)
    with torch.no_grad():
        for batch in (5, 7, 6, 3):
            inputs = torch.rand(batch, 3, 2, 2)
            out = graphs(module, inputs)
            torch.testing.assert_close(out, module(inputs))
            assert out.shape == (batch, 5)
            static = fake.replayed[-1]
            assert len(static) == bucket_size(batch)
            assert torch.equal(static[:batch], inputs)
            assert not static[batch:].any()  # no row of an earlier, larger batch is left in the padding
    assert fake.shapes == [(8, 3, 2, 2), (4, 3, 2, 2)]


def test_one_capture_per_bucket_and_signature():
    module = _module()
    graphs, fake = _graphed(module)
    with torch.no_grad():
        for batch in (8, 5, 8, 6, 1, 1, 2):
            graphs(module, torch.rand(batch, 12))
        assert fake.shapes == [(8, 12), (1, 12), (2, 12)]
        graphs(module, torch.rand(8, 3, 4))  # another row shape
        graphs(module, torch.rand(8, 12), variant="bf16")  # another variant of the function
        graphs(module, torch.rand(8, 12), variant="bf16")
    assert fake.shapes[3:] == [(8, 3, 4), (8, 12)]
    assert graphs.captures == len(graphs) == 5


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.load_state_dict(_module(seed=1).state_dict()), id="load_state_dict"),
        pytest.param(lambda m: m[1].weight.mul_(2.0), id="in-place-edit"),
        pytest.param(lambda m: m[2].running_mean.add_(1.0), id="buffer-edit"),
        pytest.param(lambda m: m.double(), id="dtype"),
        pytest.param(lambda m: m[1].requires_grad_(True), id="requires_grad"),
    ],
)
def test_graphs_are_dropped_and_recaptured_when_the_weights_change(change):
    module = _module().requires_grad_(False)
    graphs, fake = _graphed(module)

    def function(batch: torch.Tensor) -> torch.Tensor:
        return module(batch.to(module[1].weight.dtype))

    inputs = torch.rand(5, 12)
    with torch.no_grad():
        graphs(function, inputs)
        graphs(function, torch.rand(2, 12))
        assert len(graphs) == 2
        change(module)
        out = graphs(function, inputs)
        torch.testing.assert_close(out, function(inputs))
    assert len(graphs) == 1 and fake.shapes == [(8, 12), (2, 12), (8, 12)]


def test_oversize_batches_training_mode_gradients_and_other_devices_run_eagerly():
    module = _module()
    graphs, fake = _graphed(module)
    inputs = torch.rand(9, 12)
    with torch.no_grad():
        torch.testing.assert_close(graphs(module, inputs), module(inputs))  # above max_batch
        module.train()  # batch statistics would mix real and padded rows
        graphs(module, inputs[:3])
        module.eval()
    out = graphs(module, inputs[:3])  # grad mode on and trainable weights: the output needs its graph
    assert out.grad_fn is not None
    assert fake.shapes == []

    def no_capture(function: Function, static_input: torch.Tensor) -> Replay:
        raise AssertionError("CPU inputs are never captured by default")

    cuda_only = GraphedForward(module, capture=no_capture)
    with torch.no_grad():
        torch.testing.assert_close(cuda_only(module, inputs[:3]), module(inputs[:3]))


def test_inference_mode_and_copies_capture_their_own_graphs():
    module = _module()
    graphs, fake = _graphed(module)
    inputs = torch.rand(3, 12)
    with torch.inference_mode():
        graphs(module, inputs)
    with torch.no_grad():  # the static input is an ordinary tensor: it can be written outside inference mode
        torch.testing.assert_close(graphs(module, inputs), module(inputs))
    copied = copy.deepcopy(graphs)
    assert len(copied) == 0 and copied.module is not module


def _frozen_encoder(shape=(3, 32, 32), **options) -> BackboneEncoder:
    encoder = BackboneEncoder(shape, TINY_MODEL, pretrained=False, input_size="native", amp=False, **options)
    encoder.backbone.requires_grad_(False)
    return encoder.eval()


def test_encoder_features_are_the_same_with_and_without_graphs():
    encoder = _frozen_encoder((6, 32, 32), frame_stack=2, channels_last=True)
    encoder.graphs, fake = _graphed(encoder.backbone)
    observations = torch.rand(7, 6, 32, 32)
    with torch.no_grad():
        graphed = [encoder(observations[:n]) for n in (3, 1, 7)]
        assert fake.shapes == [(8, 3, 32, 32), (2, 3, 32, 32)]  # two frames per observation
        encoder.cuda_graphs = False
        eager = [encoder(observations[:n]) for n in (3, 1, 7)]
    for with_graphs, without in zip(graphed, eager, strict=True):
        torch.testing.assert_close(with_graphs, without, rtol=1e-6, atol=1e-6)  # exact here; kernels may vary by batch


def test_the_extractor_graphs_only_while_frozen_and_its_option_turns_them_off():
    space = spaces.Box(0, 255, (3, 32, 32), np.uint8)
    extractor = TimmExtractor(space, TINY_MODEL, pretrained=False, frozen=True, input_size="native", amp=False,
                              feature_cache=0)
    extractor.encoder.graphs, fake = _graphed(extractor.backbone)
    observations = torch.randint(0, 256, (3, 3, 32, 32)).float()
    with torch.no_grad():
        frozen = extractor(observations)
    assert fake.shapes == [(4, 3, 32, 32)]
    extractor.encoder.set_trains(True)
    extractor(observations)
    assert len(fake.shapes) == 1
    off = TimmExtractor(space, TINY_MODEL, pretrained=False, frozen=True, cuda_graphs=False)
    assert off.encoder.cuda_graphs is False and frozen.shape == (3, extractor.features_dim)
    with pytest.raises(ValueError, match=r"cuda_graphs must be True or False, got 'off' \(str\)"):
        TimmExtractor(space, TINY_MODEL, pretrained=False, cuda_graphs="off")
    venv = DummyVecEnv([lambda: image_env(size=32)])
    assert FrozenBackboneEmbedding(venv, TINY_MODEL, pretrained=False, cuda_graphs=False).encoder.cuda_graphs is False


@needs_cuda
def test_cuda_graphs_replay_the_frozen_backbone_on_a_gpu():
    encoder = _frozen_encoder().cuda()
    encoder.amp = True  # bf16 graphs (the default measures both precisions: tests/test_precision.py)
    observations = torch.rand(7, 3, 32, 32, device="cuda")
    with torch.no_grad():
        graphed = [encoder(observations[:n]) for n in (5, 7, 3)]
        assert encoder.graphs.captures == 2  # buckets 8 and 4
        encoder.cuda_graphs = False
        eager = [encoder(observations[:n]) for n in (5, 7, 3)]
    for with_graphs, without in zip(graphed, eager, strict=True):
        torch.testing.assert_close(with_graphs, without, rtol=2e-2, atol=2e-2)

    encoder.cuda_graphs = True
    other = _frozen_encoder().cuda()
    with torch.no_grad():
        encoder.load_state_dict(other.state_dict())
        reloaded = encoder(observations[:5])
        other.amp = True
        other.cuda_graphs = False
        torch.testing.assert_close(reloaded, other(observations[:5]), rtol=2e-2, atol=2e-2)
    assert encoder.graphs.captures == 3 and len(encoder.graphs) == 1


@needs_cuda
def test_cuda_graphs_follow_an_encoder_moved_to_the_cpu_and_back():
    encoder = _frozen_encoder().cuda()
    observations = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        on_gpu = encoder(observations.cuda()).cpu()
        on_cpu = encoder.cpu()(observations)
        # Back on the GPU the weights may or may not reuse their old addresses: either way the replay reads them.
        again = encoder.cuda()(observations.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(again, on_gpu, rtol=0, atol=0)
