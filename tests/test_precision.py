"""FastestChoice: each candidate timed once per key, the faster kept; the encoder's default precision for a frozen
backbone is the measured one. On CPU a fake clock stands in for CUDA timings; the last test runs on a GPU."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from sb3_pretrained.cuda_graphs import GraphedForward
from sb3_pretrained.encoder import BackboneEncoder
from sb3_pretrained.precision import FastestChoice
from tests.helpers import TINY_MODEL

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class FakeClock:
    """Time that moves only when a candidate runs, by that candidate's cost."""

    def __init__(self, costs: dict) -> None:
        self.costs, self.now, self.runs = costs, 0.0, []

    def __call__(self) -> float:
        return self.now

    def run(self, candidate) -> None:
        self.runs.append(candidate)
        self.now += self.costs[candidate]


def test_the_faster_candidate_is_kept_and_each_key_is_measured_once():
    clock = FakeClock({False: 2.0, True: 0.5})
    choice = FastestChoice(repeats=3, rounds=2, clock=clock)
    assert choice.choose("shape A", clock.run) is True
    # one untimed call each, then rounds that time every candidate in turn
    assert clock.runs == [False, True] + ([False] * 3 + [True] * 3) * 2
    assert choice.timings["shape A"] == {False: 2.0, True: 0.5}
    assert choice.choose("shape A", clock.run) is True and len(clock.runs) == 14  # remembered
    clock.costs = {False: 1.0, True: 1.5}
    assert choice.choose("shape B", clock.run) is False
    clock.costs = {False: 1.0, True: 1.0}
    assert choice.choose("a tie", clock.run) is False  # the first candidate wins a tie
    assert choice.choices == {"shape A": True, "shape B": False, "a tie": False}


def test_each_candidate_counts_its_best_round():
    """A clock that runs slow in the first round (a GPU ramping up) penalizes neither candidate."""
    clock = FakeClock({False: 1.0, True: 1.2})
    choice = FastestChoice(repeats=1, rounds=2, clock=clock)

    def run(candidate) -> None:
        clock.run(candidate)
        if len(clock.runs) <= 3:  # the untimed calls and the first timed call of fp32: slow
            clock.now += 5.0

    assert choice.choose("key", run) is False
    assert choice.timings["key"] == {False: pytest.approx(1.0), True: pytest.approx(1.2)}


def test_measurements_are_not_carried_into_copies_or_saved_models():
    clock = FakeClock({False: 1.0, True: 2.0})
    choice = FastestChoice(clock=time_zero)
    choice.choose("key", clock.run)
    for other in (copy.deepcopy(choice), pickle.loads(pickle.dumps(choice))):
        assert other.choices == {} and other.timings == {} and other.candidates == (False, True)


def time_zero() -> float:
    return 0.0


@pytest.mark.parametrize("bad", [dict(candidates=()), dict(repeats=0), dict(repeats=True), dict(rounds=0)])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError, match="at least one candidate and repeats, rounds >= 1"):
        FastestChoice(**bad)


def _measuring_encoder(costs: dict) -> tuple[BackboneEncoder, FakeClock]:
    """A frozen encoder that measures its precision on CPU, each backbone call costing ``costs[amp]``."""
    encoder = BackboneEncoder((3, 32, 32), TINY_MODEL, pretrained=False, input_size="native", cuda_graphs=False)
    encoder.backbone.requires_grad_(False)
    clock = FakeClock(costs)
    encoder.precision = FastestChoice(repeats=2, rounds=1, clock=clock, device_types=("cpu",))
    embed = encoder._embed

    def costed(inputs: torch.Tensor, amp: bool) -> torch.Tensor:
        clock.run(amp)
        return embed(inputs, amp)

    encoder._embed = costed  # type: ignore[method-assign]
    return encoder.eval(), clock


def test_a_frozen_encoder_measures_at_its_first_batch_and_keeps_the_choice():
    encoder, clock = _measuring_encoder({False: 3.0, True: 1.0})
    observations = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        features = encoder(observations)
        bf16 = BackboneEncoder._embed(encoder, observations, amp=True)
    torch.testing.assert_close(features, bf16, rtol=0, atol=0)
    assert list(encoder.precision.choices.values()) == [True]
    assert next(iter(encoder.precision.choices))[0] == (3, 32, 32)  # the input shape
    assert clock.runs == [False, True, False, False, True, True, True]  # measured, then the call itself

    with torch.no_grad():
        later = encoder(observations[:2])  # another batch size: the same precision, not measured again
        encoder(observations[:0])  # an empty batch (no cache miss) is never measured
    assert len(encoder.precision.choices) == 1 and clock.runs[7:] == [True, True]
    torch.testing.assert_close(later, bf16[:2], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        encoder(torch.rand(2, 3, 16, 16))  # another input shape: measured
    assert len(encoder.precision.choices) == 2


def test_the_slower_precision_graphs_are_dropped():
    encoder, clock = _measuring_encoder({False: 1.0, True: 3.0})
    encoder.cuda_graphs = True
    captured = []

    def capture(function, static_input):
        captured.append(tuple(static_input.shape))
        return lambda: function(static_input)

    encoder.graphs = GraphedForward(encoder.backbone, capture=capture, device_types=("cpu",))
    with torch.no_grad():
        encoder(torch.rand(3, 3, 32, 32))
    assert encoder.precision.choices[((3, 32, 32), torch.device("cpu"), True, True)] is False
    assert len(captured) == 2 and len(encoder.graphs) == 1  # both captured to be timed, the bf16 one dropped


def test_a_set_precision_or_a_training_backbone_is_not_measured():
    encoder, clock = _measuring_encoder({False: 3.0, True: 1.0})
    encoder.amp = False
    with torch.no_grad():
        encoder(torch.rand(2, 3, 32, 32))
    assert clock.runs == [False] and encoder.precision.choices == {}
    encoder.amp = None
    encoder.set_trains(True)
    encoder.train()(torch.rand(2, 3, 32, 32))
    assert encoder.precision.choices == {} and len(clock.runs) == 2


@needs_cuda
def test_the_precision_is_measured_on_a_gpu():
    encoder = BackboneEncoder((3, 32, 32), TINY_MODEL, pretrained=False, input_size="native").cuda().eval()
    encoder.backbone.requires_grad_(False)
    observations = torch.rand(5, 3, 32, 32, device="cuda")
    with torch.no_grad():
        features = encoder(observations)
        (key, chosen), = encoder.precision.choices.items()
        encoder.cuda_graphs = False
        same_precision = encoder._embed(observations, amp=chosen)
        other_precision = encoder._embed(observations, amp=not chosen)
    assert (features - same_precision).abs().max() < (features - other_precision).abs().max()
    assert len(encoder.graphs) == 1  # the graph of the chosen precision only
    assert set(encoder.precision.timings[key]) == {False, True}
    assert all(seconds > 0 for seconds in encoder.precision.timings[key].values())
