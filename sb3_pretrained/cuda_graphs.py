"""CUDA graphs of a frozen module's forward: one kernel-launch replay instead of hundreds of launches.

A small backbone at the batch sizes an RL loop uses (the envs' count while acting, the feature cache's misses while
training) is bound by kernel launches, not arithmetic. :class:`GraphedForward` captures the forward once per batch
bucket (powers of two up to ``max_batch``) and input signature, pads each batch up to its bucket and replays the
graph. Rows go through an eval-mode module independently, so padded rows change nothing in the real rows.

A graph reads the weights where they lived at capture: values changed in place (even through ``.data``, as a
polyak update does) are seen by the next replay, while weights moved to new storage (``.to()``, a swapped tensor)
would not be. Every call therefore compares the module's version counters, storage addresses and ``requires_grad``
flags with those at capture (:func:`~sb3_pretrained.feature_cache.tensors_state`) and drops every graph when
any moved.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import nn

from sb3_pretrained.feature_cache import tensors_state

Function = Callable[[torch.Tensor], torch.Tensor]
#: Recomputes a captured function on its static input's current values and returns the (static) output.
Replay = Callable[[], torch.Tensor]
#: A capture backend: given a function and its static input, captures it and returns the replay.
Capture = Callable[[Function, torch.Tensor], Replay]

_WARMUP_CALLS = 3  # PyTorch's documented recipe warms up on a side stream before capture (cuDNN/cuBLAS setup)


def capture_cuda_graph(function: Function, static_input: torch.Tensor) -> Replay:
    """Capture ``function(static_input)`` in a ``torch.cuda.CUDAGraph`` (warmed up on a side stream, as PyTorch's
    CUDA graph docs require) and return its replay.

    :param function: the computation; it must not synchronize with the host or change shapes between calls
    :param static_input: the CUDA tensor whose values each replay reads
    :return: a callable that replays the graph and returns its static output tensor (overwritten by the next replay)
    """
    device = static_input.device
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_CALLS):
                function(static_input)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = function(static_input)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_output

    return replay


def bucket_size(batch: int) -> int:
    """The smallest power of two >= ``batch`` (``batch`` >= 1): the batch size a graph is captured for."""
    return 1 << (batch - 1).bit_length()


class GraphedForward:
    """Replays captured graphs of ``function(inputs)`` for a frozen, eval-mode ``module``, one per batch bucket and
    input signature (row shape, dtype, device and the caller's ``variant``), captured at first use.

    A batch of N <= ``max_batch`` rows is copied into the static input of bucket :func:`bucket_size` (N), the rows
    above N zeroed, and the first N output rows are returned as a new tensor. Everything else runs
    ``function(inputs)`` eagerly: batches above ``max_batch`` (at large batches a graph gains little and would hold
    the largest activations), inputs on a device type outside ``device_types``, a module in training mode (batch
    statistics would mix real and padded rows), and calls that need gradients (grad mode on and a parameter or the
    input requires grad).

    :param module: the module whose weights ``function`` uses; watched for changes (see the module docstring)
    :param max_batch: the largest bucket, a power of two >= 1 (default 256)
    :param capture: the capture backend (default :func:`capture_cuda_graph`); tests pass one that records captures
    :param device_types: the device types whose inputs are graphed (default CUDA only)
    """

    def __init__(
        self,
        module: nn.Module,
        max_batch: int = 256,
        capture: Capture = capture_cuda_graph,
        device_types: Sequence[str] = ("cuda",),
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1 or max_batch & (max_batch - 1):
            raise ValueError(f"max_batch must be a power of two >= 1 (1, 2, 4, ..., 256), got {max_batch!r}.")
        self.module = module
        self.max_batch = max_batch
        self.capture = capture
        self.device_types = tuple(device_types)
        #: Graphs captured so far, counting those dropped since.
        self.captures = 0
        self._graphs: dict[tuple[Hashable, ...], tuple[torch.Tensor, Replay]] = {}
        self._state: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict:
        # Graphs neither pickle nor deep-copy, and a copy's weights live elsewhere: it captures its own.
        return dict(self.__dict__, _graphs={}, _state=None)

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Drop every graph (and the memory it holds)."""
        self._graphs.clear()

    def discard(self, variant: Hashable) -> None:
        """Drop the graphs captured under ``variant`` (and the memory they hold)."""
        for key in [key for key in self._graphs if key[-1] == variant]:
            del self._graphs[key]

    def _module_state(self) -> tuple[Any, ...]:
        parameters = list(self.module.parameters())
        return tensors_state([*parameters, *self.module.buffers()]), tuple(p.requires_grad for p in parameters)

    def __call__(self, function: Function, inputs: torch.Tensor, variant: Hashable = ()) -> torch.Tensor:
        """``function(inputs)``, replayed from a graph where it can be (see the class docstring).

        :param function: maps a batch (M, ...) to outputs (M, ...) row by row, using only ``module``'s weights and
            settings that ``variant`` names
        :param inputs: a batch (N, ...)
        :param variant: everything else ``function`` depends on (precision, memory format, ...): graphs captured
            under another variant are not replayed
        :return: the outputs (N, ...), a new tensor
        """
        batch = len(inputs)
        if batch == 0 or batch > self.max_batch or inputs.device.type not in self.device_types or self.module.training:
            return function(inputs)
        state = self._module_state()
        if state != self._state:
            self.clear()
            self._state = state
        if torch.is_grad_enabled() and (inputs.requires_grad or any(state[1])):
            return function(inputs)
        bucket = bucket_size(batch)
        key = (bucket, tuple(inputs.shape[1:]), inputs.dtype, inputs.device, variant)
        if key not in self._graphs:
            # Static tensors must be ordinary tensors (an inference tensor cannot be written outside inference mode).
            with torch.inference_mode(False), torch.no_grad():
                static_input = torch.zeros((bucket, *inputs.shape[1:]), dtype=inputs.dtype, device=inputs.device)
                static_input[:batch] = inputs
                self._graphs[key] = static_input, self.capture(function, static_input)
            self.captures += 1
        static_input, replay = self._graphs[key]
        static_input[:batch].copy_(inputs)
        if batch < bucket:
            static_input[batch:].zero_()
        return replay()[:batch].clone()
