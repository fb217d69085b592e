"""The faster of float32 and bfloat16 autocast for a frozen backbone, measured where it runs.

Which precision is faster depends on the batch, not only on the GPU: a small backbone at the batch an RL loop acts
with (the envs' count) is bound by kernel launches, where bf16 autocast adds cast kernels and can be slower than
float32 (efficientnet_lite0 at batch 16 on an H200: 6.5 ms bf16 against 3.5 ms fp32, eager); at a training batch
the arithmetic dominates and bf16 wins. :class:`FastestChoice` therefore times each candidate the first time a
key (input shape, device, ...) is seen and keeps the fastest for that key.

The encoder measures once per input signature, at its first call (in an SB3 loop: the acting batch, the envs'
count), and keeps that precision for every batch size after it, so that features computed while acting and those of
later cache misses in training come from the same computation. The timings are noisy like any timing: two runs
on one machine can choose differently when both are about as fast; :attr:`FastestChoice.timings` records what was
measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

#: Timed calls per candidate and round, after one untimed call (which may capture a CUDA graph or pick kernels).
REPEATS = 5
#: Rounds, each timing every candidate in turn (so that a clock ramping up favours none); each keeps its best round.
ROUNDS = 3


class FastestChoice:
    """Per key, the candidate whose ``run(candidate)`` took the least time per call, measured once: ``rounds``
    rounds of ``repeats`` calls of each candidate in turn, each candidate's best round counting.

    :param candidates: the choices, in order of preference on a tie (the first wins)
    :param repeats: timed calls per candidate and round
    :param rounds: rounds of timing
    :param clock: seconds, monotonic (tests pass a fake one)
    :param device_types: the input device types for which the choice is measured (the caller asks
        :meth:`measures`); elsewhere the caller's default applies
    """

    def __init__(
        self,
        candidates: Sequence[Hashable] = (False, True),
        repeats: int = REPEATS,
        rounds: int = ROUNDS,
        clock: Callable[[], float] = time.perf_counter,
        device_types: Sequence[str] = ("cuda",),
    ) -> None:
        counts = (repeats, rounds)
        if len(candidates) < 1 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            raise ValueError(
                f"Need at least one candidate and repeats, rounds >= 1, got {candidates!r}, {repeats!r}, {rounds!r}."
            )
        self.candidates = tuple(candidates)
        self.repeats, self.rounds = repeats, rounds
        self.clock = clock
        self.device_types = tuple(device_types)
        #: key -> the chosen candidate; :attr:`timings`: key -> seconds per call of each candidate.
        self.choices: dict[Hashable, Hashable] = {}
        self.timings: dict[Hashable, dict[Hashable, float]] = {}

    def __getstate__(self) -> dict:
        # Measurements belong to this machine and process: a loaded or copied model measures again.
        return dict(self.__dict__, choices={}, timings={})

    def measures(self, device_type: str) -> bool:
        """Whether inputs on this device type get a measured choice."""
        return device_type in self.device_types

    def choose(self, key: Hashable, run: Callable[[Any], object], synchronize: Callable[[], None] = lambda: None) -> Any:
        """The fastest candidate for ``key``, measured with ``run`` the first time ``key`` is seen.

        :param key: what the speed depends on (batch bucket, input shape, device, memory format, ...)
        :param run: computes the work once with the given candidate
        :param synchronize: waits for queued device work (``torch.cuda.synchronize``), so that the clock sees it
        """
        if key not in self.choices:
            for candidate in self.candidates:
                run(candidate)  # untimed: graph capture, kernel selection, caches
            synchronize()
            seconds = dict.fromkeys(self.candidates, float("inf"))
            for _ in range(self.rounds):
                for candidate in self.candidates:
                    start = self.clock()
                    for _ in range(self.repeats):
                        run(candidate)
                    synchronize()
                    seconds[candidate] = min(seconds[candidate], (self.clock() - start) / self.repeats)
            self.timings[key] = seconds
            self.choices[key] = min(self.candidates, key=lambda candidate: seconds[candidate])
        return self.choices[key]
