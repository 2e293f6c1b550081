"""A batch planned for a model: its requests flattened into images, each with its own seed, and the pictures
the images start from.

The engine plans a batch (``Batch.plan``) before its model runs it (``sdbot.inference.runner``). Image ``i``
of a request gets the seed ``seed + i`` (a seed left open is drawn here), so an image's pixels depend only on
its own request. Image to image starts from each source at the output size; Zoom Out and Pan from the canvas
``sdbot.inference.canvas`` lays out (the source in place, a mask over the rest), keeping the plan and the
picture to put its pixels back after decoding; super-resolution from each source as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from PIL import Image

from sdbot.inference.canvas import Outpaint, pan, zoom_out
from sdbot.inference.families import Size
from sdbot.inference.types import EngineRequest, Operation
from sdbot.params import JobParams, image_seed, random_seed


@dataclass(frozen=True)
class PlannedImage:
    """One image of a batch: the request it belongs to and its own seed."""

    request: int
    prompt: str
    negative_prompt: str
    seed: int


@dataclass(frozen=True)
class Batch:
    """One pipeline run: its images, the parameters they share (``params``: the first request's; the batch
    key is the same for all) and, for image to image, each image's source at the output size. For outpainting
    the sources are the canvases (the picture in place), ``masks`` say what to paint and ``outpaints`` hold
    each image's plan and picture, whose pixels go back in after decoding; for super-resolution the sources
    are the pictures as they are."""

    operation: Operation
    images: list[PlannedImage]
    request_count: int
    params: JobParams
    sources: list[Image.Image] | None = None
    masks: list[Image.Image] | None = None
    outpaints: list[tuple[Outpaint, Image.Image]] | None = None

    @property
    def size(self) -> Size:
        return Size(self.params.width, self.params.height)

    @classmethod
    def plan(cls, operation: Operation, requests: list[EngineRequest]) -> Batch:
        """Flatten the requests into images (drawing missing seeds) and prepare their sources."""
        images = []
        for index, request in enumerate(requests):
            params = request.params
            base = params.seed if params.seed is not None else random_seed()
            images.extend(
                PlannedImage(index, params.prompt, params.negative_prompt, image_seed(base, i))
                for i in range(params.count)
            )
        first = requests[0].params
        if operation is Operation.GENERATE:
            return cls(operation, images, len(requests), first)
        if operation is Operation.OUTPAINT:
            outpaints = [_outpaint(request) for request in requests]
            canvases = [plan.init_image(picture) for plan, picture in outpaints]
            masks = [plan.mask() for plan, _ in outpaints]
            return cls(
                operation,
                images,
                len(requests),
                first,
                sources=[canvases[image.request] for image in images],
                masks=[masks[image.request] for image in images],
                outpaints=[outpaints[image.request] for image in images],
            )
        prepare = _source if operation is Operation.SUPER_RESOLUTION else _prepared_source
        prepared = [prepare(request) for request in requests]
        return cls(operation, images, len(requests), first, [prepared[image.request] for image in images])

    def request_images(self) -> list[list[PlannedImage]]:
        """Each request's images."""
        grouped: list[list[PlannedImage]] = [[] for _ in range(self.request_count)]
        for image in self.images:
            grouped[image.request].append(image)
        return grouped

    def only(self, requests: list[int]) -> Batch:
        """The part of the batch that makes ``requests``' images, renumbered in that order."""
        number = {request: new for new, request in enumerate(requests)}
        kept = [i for i, image in enumerate(self.images) if image.request in number]

        def part(items: list | None) -> list | None:
            return None if items is None else [items[i] for i in kept]

        images = [replace(self.images[i], request=number[self.images[i].request]) for i in kept]
        return replace(
            self,
            images=images,
            request_count=len(requests),
            sources=part(self.sources),
            masks=part(self.masks),
            outpaints=part(self.outpaints),
        )


def _source(request: EngineRequest) -> Image.Image:
    """The source in RGB, at its own size."""
    assert request.source is not None  # check_batch made sure
    return request.source.convert("RGB")


def _prepared_source(request: EngineRequest) -> Image.Image:
    """The source in RGB at the request's size (an upscale's is twice the source's)."""
    source = _source(request)
    if source.size == request.params.size:
        return source
    return source.resize(request.params.size, Image.Resampling.LANCZOS)


def _outpaint(request: EngineRequest) -> tuple[Outpaint, Image.Image]:
    """Where the request's picture lies on its canvas (the request's size), and the picture."""
    params, picture = request.params, _source(request)
    if params.zoom is not None:
        return zoom_out(params.size, params.zoom), picture
    assert params.pan is not None  # check_batch made sure an outpaint request says one or the other
    return pan(params.size, picture.size, params.pan), picture
