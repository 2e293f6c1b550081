"""The NSFW verdict for finished images, keeping the pixels.

diffusers' pipelines run ``StableDiffusionSafetyChecker`` themselves and replace flagged images with black
ones, which leaves a server nothing to put behind a spoiler. This runs the same checker on the decoded
images and returns only the flags; what to do with a flagged image is the server's policy, decided later.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class SafetyCheck:
    """Flags images with the model's own safety checker and feature extractor."""

    def __init__(self, checker: torch.nn.Module, feature_extractor, device: torch.device, dtype: torch.dtype):
        self._checker = checker
        self._feature_extractor = feature_extractor
        self._device = device
        self._dtype = dtype

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[bool]:
        features = self._feature_extractor(images, return_tensors="pt").pixel_values
        # The checker blacks out flagged entries of the array it is given: hand it a throwaway one.
        throwaway = np.zeros((len(images), 1, 1, 3), dtype=np.float32)
        _, flags = self._checker(images=throwaway, clip_input=features.to(self._device, self._dtype))
        return [bool(flag) for flag in flags]
