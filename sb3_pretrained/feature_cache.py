"""A frozen backbone's features of recently seen inputs, so the same image is embedded once.

A frozen backbone is a fixed function, yet SB3 runs it again and again on the same images: PPO reruns every
rollout observation at each of its epochs, SAC/TD3/DQN run the same batch through 2-4 extractor copies
(actor, critics, targets), and in a frame stack each frame comes back in the next 3 observations.
:class:`FeatureCache` keys each input by an exact hash of its bits and computes only the rows it has not seen.

The key of a row: its float32 bit patterns, each scrambled by an invertible integer mixer (so that inputs differing
only in high bits, such as pixels flipping between 0.0 and 1.0, still differ in every bit), then two sums of those
times fixed random weights, modulo 2^32. Integer arithmetic is exact and associative, so the key of a row does not
depend on the batch it arrives in or the device; two different rows share a key with probability about 2^-64.

Stored features are only right while every module they were computed with still holds the same weights. The cache
checks that itself when it is given the module (``features(..., weights=backbone)``): each sharer's parameters and
buffers are fingerprinted with the same hash whenever their version counters move (an optimizer step, a
``load_state_dict``, an in-place edit), and the first time two sharers differ, or one starts training
(:meth:`FeatureCache.close`), the cache closes for good: weights can flow from one copy to another (a target network
follows its online network by polyak averaging through ``.data``, which no version counter sees), so a group that
has split can never be trusted again. One difference is not a split: frozen copies whose weights differ only by the
rounding of those soft updates (within ``SOFT_UPDATE_RTOL`` relative), as a saved SAC or TD3 shows when loaded.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

_HASH_SEED = 20261125
_MAX_HASH_ELEMENTS = 1 << 24  # values hashed at once (int32 temporaries of 64 MB)
#: Relative difference up to which frozen sharers' weights count as the same: the rounding drift of soft target updates,
#: which settles at about 2^-23 / tau relative (measured: 7e-6 for tau 0.003 to 0.02, 5e-5 for tau 0.0005).
SOFT_UPDATE_RTOL = 1e-4
_hash_weights: dict[tuple[int, torch.device], torch.Tensor] = {}


def _weights(width: int, device: torch.device) -> torch.Tensor:
    key = (width, device)
    if key not in _hash_weights:
        generator = torch.Generator().manual_seed(_HASH_SEED)
        weights = torch.randint(-(2**31), 2**31 - 1, (2, width), generator=generator, dtype=torch.int32)
        _hash_weights[key] = weights.to(device)
    return _hash_weights[key]


def _mix(bits: torch.Tensor) -> torch.Tensor:
    """An invertible scramble of int32 values (xor-shift, odd multiply, xor-shift), wrapping like C's uint32."""
    mixed = bits ^ ((bits >> 16) & 0xFFFF)
    mixed *= 0x45D9F3B
    return mixed ^ ((mixed >> 16) & 0xFFFF)


def row_keys(inputs: torch.Tensor) -> list[tuple[int, int]]:
    """One exact 64-bit key per row of ``inputs`` (any shape (N, ...)): equal rows, equal keys."""
    rows = inputs.detach().float().flatten(1)
    if not rows.is_contiguous():
        rows = rows.contiguous()
    weights = _weights(rows.shape[1], rows.device)
    chunk = max(1, _MAX_HASH_ELEMENTS // max(1, rows.shape[1]))
    keys = []
    for start in range(0, len(rows), chunk):
        mixed = _mix(rows[start : start + chunk].view(torch.int32))
        keys.append(torch.stack([(mixed * w).sum(1, dtype=torch.int32) for w in weights], dim=1))
    return [tuple(k) for k in torch.cat(keys).cpu().tolist()] if keys else []


def weights_key(module: nn.Module) -> bytes:
    """A fingerprint (BLAKE2b) of the bits of every parameter and buffer of ``module``: equal weights, equal keys."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (*module.parameters(), *module.buffers()):
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


def tensors_state(tensors: list[torch.Tensor]) -> tuple[int, tuple[int, ...]]:
    """Version counters and storage addresses of ``tensors``: the first moves with every in-place change
    (``load_state_dict``, an optimizer step; not an edit through ``.data``), the second when they move to another
    device or dtype or are replaced by new storage."""
    return sum(t._version for t in tensors), tuple(t.data_ptr() for t in tensors)


@dataclass
class _Sharer:
    module: weakref.ref
    tensors: list[torch.Tensor]
    state: tuple[int, tuple[int, ...]]
    key: bytes


class FeatureCache:
    """Backbone features of the last ``capacity`` distinct inputs (first in, first out), shared by modules that
    compute the same function.

    Only valid while the function is fixed. Given the module (``weights=``), the cache verifies that at every
    call (see the module docstring); it closes for good when sharers' weights differ (beyond the rounding of soft
    target updates of frozen copies) or when :meth:`close` is called (a sharer starts training). A closed cache
    computes everything (:attr:`active` is False).

    :param capacity: rows kept, > 0; the storage grows with use up to ``capacity`` x feature size
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive number of rows, got {capacity!r}.")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self.closed = False
        self._sharers: dict[int, _Sharer] = {}
        self._weights: set[bytes] = set()  # fingerprints of the weights the stored rows come from
        self._validated: set[bytes] = set()  # the last set of differing fingerprints found to be rounding apart
        self.clear()

    def __getstate__(self) -> dict:
        # Weak references do not pickle, and a copy must verify its sharers' weights anew.
        state = dict(self.__dict__, _sharers={}, _weights=set(), _validated=set())
        state.update(_slots={}, _keys=[], _store=None, _next=0)
        return state

    @property
    def active(self) -> bool:
        """False once closed: then nothing is served from or stored in the cache."""
        return not self.closed

    def close(self) -> None:
        """Stop caching for good (a sharer's weights may change from now on: it trains)."""
        self.closed = True
        self._sharers.clear()
        self.clear()

    def _check_weights(self, module: nn.Module) -> None:
        """Fingerprint every sharer whose tensors changed; close when two differ (beyond soft-update rounding), clear
        when no sharer holds the weights the stored rows come from any more (they all moved, or left)."""
        known = self._sharers.get(id(module))
        if known is None or known.module() is not module:
            tensors = [*module.parameters(), *module.buffers()]
            self._sharers[id(module)] = _Sharer(weakref.ref(module), tensors, (-1, ()), b"")
        for key, sharer in list(self._sharers.items()):
            owner = sharer.module()
            if owner is None:
                del self._sharers[key]
                continue
            state = tensors_state(sharer.tensors)
            if state != sharer.state:
                sharer.tensors = [*owner.parameters(), *owner.buffers()]  # .to() replaces buffers
                sharer.state, sharer.key = tensors_state(sharer.tensors), weights_key(owner)
        fingerprints = {sharer.key for sharer in self._sharers.values()}
        if len(fingerprints) > 1 and fingerprints != self._validated:
            if not self._differ_by_soft_update_rounding_only():
                self.close()
                return
            self._validated = fingerprints
        if not fingerprints & self._weights:  # no sharer holds the weights the rows came from any more
            self.clear()
            self._weights = fingerprints

    def _differ_by_soft_update_rounding_only(self) -> bool:
        """Whether the sharers, all frozen, hold the same weights up to the rounding of soft target updates.

        SB3's soft update of a target copy, ``(1 - tau) * w + tau * w`` for a frozen backbone, moves some weights by
        a rounding step (about 5% of them after 100 updates with tau 0.005), and the drift settles within about
        2^-23 / tau relative (:data:`SOFT_UPDATE_RTOL` covers tau >= 0.0005). Version counters do not see these
        updates (they go through ``.data``), so while training the copies share the cache regardless; this keeps
        them sharing it after the model is saved and loaded, where the drift shows. Stored rows are kept only while a
        sharer still holds weights they were computed with (``_weights`` is set when the rows are cleared), so small
        changes cannot add up."""
        sharers = list(self._sharers.values())
        reference = sharers[0].tensors
        for sharer in sharers[1:]:
            if len(sharer.tensors) != len(reference):
                return False
            for tensor, other in zip(sharer.tensors, reference, strict=True):
                if (tensor.requires_grad or other.requires_grad or tensor.shape != other.shape
                        or tensor.dtype != other.dtype):
                    return False
                other = other.to(tensor.device)
                if not tensor.is_floating_point():
                    if not torch.equal(tensor, other):
                        return False
                elif not torch.allclose(tensor, other, rtol=SOFT_UPDATE_RTOL, atol=1e-12):
                    return False
        return True

    def clear(self) -> None:
        """Forget every stored row (the hit and miss counters stay)."""
        self._slots: dict[tuple[int, int], int] = {}
        self._keys: list[tuple[int, int]] = []  # the key in each slot
        self._store: torch.Tensor | None = None
        self._next = 0

    def __len__(self) -> int:
        return len(self._slots)

    def features(
        self, inputs: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor], weights: nn.Module | None = None
    ) -> torch.Tensor:
        """``compute(inputs)``, computing only the rows not stored yet (each distinct row once) and storing them.

        :param inputs: a batch (N, ...)
        :param compute: the function being cached; maps a batch (M, ...) to features (M, F)
        :param weights: the module whose weights ``compute`` uses; its weights are checked against every other
            sharer's (None: the caller guarantees that ``compute`` is fixed)
        :return: features (N, F), a new tensor
        """
        if weights is not None and not self.closed:
            self._check_weights(weights)
        if len(inputs) == 0 or self.closed:
            return compute(inputs)
        if self._store is not None and self._store.device != inputs.device:
            self.clear()
        keys = row_keys(inputs)
        slots = [self._slots.get(key) for key in keys]
        new_rows: dict[tuple[int, int], int] = {}  # key -> index into the computed batch
        first_row: list[int] = []
        for row, (key, slot) in enumerate(zip(keys, slots, strict=False)):
            if slot is None and key not in new_rows:
                new_rows[key] = len(first_row)
                first_row.append(row)
        computed = compute(inputs[first_row]) if first_row else None
        self.hits += len(keys) - len(first_row)
        self.misses += len(first_row)

        reference = computed if computed is not None else self._store
        assert reference is not None  # every row is either computed or stored
        out = torch.empty(len(keys), reference.shape[1], dtype=reference.dtype, device=reference.device)
        hit_rows = [row for row, slot in enumerate(slots) if slot is not None]
        if hit_rows:
            assert self._store is not None  # hit rows are stored
            out[hit_rows] = self._store[[slots[row] for row in hit_rows]]
        if computed is not None:
            miss_rows = [row for row, slot in enumerate(slots) if slot is None]
            out[miss_rows] = computed[[new_rows[keys[row]] for row in miss_rows]]
            self._insert(list(new_rows), computed.detach())
        return out

    def _insert(self, keys: list[tuple[int, int]], rows: torch.Tensor) -> None:
        keys, rows = keys[-self.capacity :], rows[-self.capacity :]
        if self._store is None or self._store.dtype != rows.dtype:
            self.clear()
            self._store = rows.new_empty((0, rows.shape[1]))
        store = self._store
        slots = []
        for key in keys:
            slot = self._next
            self._next = (self._next + 1) % self.capacity
            if slot < len(self._keys):
                del self._slots[self._keys[slot]]
                self._keys[slot] = key
            else:
                self._keys.append(key)
            self._slots[key] = slot
            slots.append(slot)
        needed = max(slots) + 1
        if needed > len(store):
            grown = store.new_empty((min(self.capacity, max(needed, 2 * len(store))), store.shape[1]))
            grown[: len(store)] = store
            store = self._store = grown
        store[slots] = rows
