"""The NSFW verdict for finished images, keeping the pixels.

diffusers' pipelines run ``StableDiffusionSafetyChecker`` themselves and replace flagged images with black
ones, which leaves a server nothing to put behind a spoiler. This runs the same checker on the decoded
images and returns only the flags; what to do with a flagged image is the server's policy, decided later.
The checker is a model's own (SD 1.x ships one) or the standalone one every other model shares
(``sdbot.inference.pipelines``): it runs wherever its weights are, in their precision.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor


class SafetyCheck:
    """Flags images with a safety checker and its feature extractor."""

    def __init__(self, checker: torch.nn.Module, feature_extractor: CLIPImageProcessor) -> None:
        self._checker = checker
        self._feature_extractor = feature_extractor

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[bool]:
        parameter = next(self._checker.parameters())
        features = self._feature_extractor(images, return_tensors="pt").pixel_values
        # The checker blacks out flagged entries of the array it is given: hand it a throwaway one.
        throwaway = np.zeros((len(images), 1, 1, 3), dtype=np.float32)
        _, flags = self._checker(images=throwaway, clip_input=features.to(parameter.device, parameter.dtype))
        return [bool(flag) for flag in flags]
