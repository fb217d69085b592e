"""TensorBoard views of the backbone: what it actually sees, and what it is.

:class:`BackboneInputLogger` writes, when training starts:

- ``backbone/input``: a grid of observations as the backbone receives them (after SB3's scaling to [0, 1], the
  backbone's resize and normalization), un-normalized back to RGB for display; one row per observation and one
  column per stacked frame;
- ``backbone/info``: the model name, where its weights came from, its input and parameter counts.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import unwrap_vec_wrapper
from torch import nn
from torch.utils.hooks import RemovableHandle
from torchvision.utils import make_grid

from sb3_pretrained.callbacks import model_extractors
from sb3_pretrained.encoder import BackboneEncoder
from sb3_pretrained.extractors import TimmExtractor
from sb3_pretrained.optim import model_optimizers
from sb3_pretrained.preprocessing import BackbonePreprocess
from sb3_pretrained.wrappers import FrozenBackboneEmbedding

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

INPUT_TAG = "backbone/input"
INFO_TAG = "backbone/info"


def display_frames(preprocess: BackbonePreprocess, backbone_input: torch.Tensor, count: int) -> torch.Tensor:
    """Backbone inputs -> ``count`` RGB images (count, 3, h, w) in [0, 1]: un-normalized, channel-stacked frames
    split into single frames, grayscale repeated to RGB."""
    images = preprocess.denormalize(backbone_input.float())
    images = images.reshape(count, -1, *images.shape[-2:])
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _markdown_table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)


def _input_description(encoder: BackboneEncoder) -> str:
    preprocess = encoder.preprocess
    size = "the observation's size" if preprocess.input_size is None else "x".join(map(str, preprocess.input_size))
    mean = [round(v, 3) for v in preprocess.mean.flatten().tolist()]
    std = [round(v, 3) for v in preprocess.std.flatten().tolist()]
    return f"{size}, {preprocess.mode} resize, mean {mean}, std {std}"


class BackboneInputLogger(BaseCallback):
    """Log to TensorBoard, when training starts, what the pretrained backbone actually sees and what it is.

    Tags (see the module docstring): ``backbone/input`` (image grid) and ``backbone/info`` (text).

    - With :class:`~sb3_pretrained.TimmExtractor` in the policy, the grid shows the env's reset observations
      through the extractor's preprocessing.
    - With the :class:`~sb3_pretrained.wrappers.FrozenBackboneEmbedding` fast path (the policy sees embeddings),
      it shows the images the wrapper embeds at the first step.

    In rl_zoo3 YAML: ``callback: [sb3_pretrained.BackboneInputLogger]``. Needs TensorBoard logging
    (``tensorboard_log=...``, the zoo's ``--tensorboard-log``); without it, it warns and logs nothing.

    :param n_images: at most this many observations (one per env) in the grid
    :param verbose: 1 prints where the images were logged
    """

    def __init__(self, n_images: int = 8, verbose: int = 0) -> None:
        super().__init__(verbose)
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise ValueError(f"n_images must be a positive int, got {n_images!r}.")
        self.n_images = n_images
        self._writer: SummaryWriter | None = None
        self._hook: RemovableHandle | None = None
        self._captured: np.ndarray | None = None

    def _on_training_start(self) -> None:
        self._writer = next(
            (f.writer for f in self.logger.output_formats if isinstance(f, TensorBoardOutputFormat)), None
        )
        if self._writer is None:
            warnings.warn(
                "BackboneInputLogger: this run has no TensorBoard output, so nothing is logged. "
                "Pass tensorboard_log='logs' to the algorithm (rl_zoo3: --tensorboard-log logs).", stacklevel=2
            )
            return
        extractors = model_extractors(self.model)
        wrapper = unwrap_vec_wrapper(self.training_env, FrozenBackboneEmbedding)
        if extractors:
            self._log_extractor_view(extractors)
        elif wrapper is not None:
            self._log_info(wrapper.encoder, self._wrapper_rows(wrapper))
            self._hook = wrapper.encoder.preprocess.register_forward_hook(self._capture)
        else:
            raise ValueError(
                "BackboneInputLogger found no backbone: the policy has no TimmExtractor "
                "(policy_kwargs=dict(features_extractor_class=TimmExtractor, ...)) and the env is not wrapped "
                "with sb3_pretrained.wrappers.FrozenBackboneEmbedding."
            )

    def _log_extractor_view(self, extractors: list[TimmExtractor]) -> None:
        encoder = extractors[0].encoder
        last_obs, space = self.model._last_obs, self.model.observation_space
        if isinstance(last_obs, dict):  # MultiInputPolicy: the first key the encoder was built for
            dict_space = cast(spaces.Dict, space)
            key = next(k for k, s in dict_space.spaces.items() if s.shape == encoder.observation_shape)
            last_obs, space = last_obs[key], dict_space[key]
        assert last_obs is not None  # set by learn() before training starts
        observations = torch.as_tensor(last_obs[: self.n_images], device=next(encoder.parameters()).device)
        with torch.no_grad():
            images = cast(torch.Tensor, preprocess_obs(observations, space, self.model.policy.normalize_images))
            backbone_input = encoder.preprocess(encoder.backbone_inputs(images))
            shown = display_frames(encoder.preprocess, backbone_input, len(observations) * encoder.frame_stack)
        paths = [name for name, m in self.model.policy.named_modules() if isinstance(m, TimmExtractor)]
        frames = f"{encoder.frame_stack} ({encoder.frame_mode}, {encoder.fusion})" if encoder.frame_stack > 1 else "1"
        self._log_info(encoder, [("runs in", f"the policy: {', '.join(paths)}"), ("frames per observation", frames)])
        self._log_images(shown, encoder.frame_stack)

    def _wrapper_rows(self, wrapper: FrozenBackboneEmbedding) -> list[tuple[str, str]]:
        frames = f"{wrapper.frame_stack} embeddings ({wrapper.fusion})" if wrapper.frame_stack > 1 else "1"
        size = int(np.prod(cast(spaces.Box, wrapper.observation_space).shape))
        where = f"the env wrapper FrozenBackboneEmbedding; the policy sees {size}-d {wrapper.numpy_dtype} vectors"
        return [("runs in", where), ("frames per observation", frames)]

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._captured is None:
            batch = output[: self.n_images]
            self._captured = display_frames(cast(BackbonePreprocess, module), batch, len(batch)).cpu().numpy()

    def _on_step(self) -> bool:
        if self._captured is not None and self._hook is not None:
            self._hook.remove()
            self._hook = None
            self._log_images(torch.from_numpy(self._captured), 1)
        return True

    def _on_training_end(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _log_info(self, encoder: BackboneEncoder, rows: list[tuple[str, str]]) -> None:
        backbone = list(encoder.backbone.parameters())
        trainable = sum(p.numel() for p in backbone if p.requires_grad)
        total = sum(p.numel() for p in backbone)
        policy_total = sum(p.numel() for p in {id(p): p for p in self.model.policy.parameters()}.values())
        optimized = {id(p): p for o in model_optimizers(self.model).values() for g in o.param_groups for p in g["params"]}
        policy_trainable = sum(p.numel() for p in optimized.values() if p.requires_grad)
        table = [
            ("model", encoder.model_name),
            ("weights", encoder.weight_source),
            *rows,
            ("input", _input_description(encoder)),
            ("backbone parameters (per copy)", f"{trainable:,} trainable, {total - trainable:,} frozen"),
            ("policy parameters", f"{policy_trainable:,} trained by the optimizer(s) of {policy_total:,}"),
        ]
        assert self._writer is not None  # only called once _on_training_start found it
        self._writer.add_text(INFO_TAG, _markdown_table(table), self.num_timesteps)
        self._writer.flush()

    def _log_images(self, images: torch.Tensor, frames: int) -> None:
        grid = make_grid(images, nrow=frames if frames > 1 else min(len(images), 8), padding=2, pad_value=1.0)
        assert self._writer is not None  # only called once _on_training_start found it
        self._writer.add_image(INPUT_TAG, grid, self.num_timesteps, dataformats="CHW")
        self._writer.flush()
        if self.verbose:
            print(f"BackboneInputLogger: logged {len(images)} backbone inputs under '{INPUT_TAG}' "
                  f"at step {self.num_timesteps}")
