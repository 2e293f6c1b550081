"""How a finished image is posted under the server's NSFW policy and the installation's policy for images
nobody checked. It decides how a result is shown, not whether a job may run, so it lives apart from the
request rules; the views ask it when they post."""

from __future__ import annotations

import enum


class Disposition(enum.Enum):
    """How one image is posted under the server's NSFW policy."""

    PLAIN = "plain"
    SPOILER = "spoiler"
    WITHHELD = "withheld"


def disposition(
    nsfw: bool | None, *, policy: str, unchecked_policy: str, age_restricted: bool
) -> Disposition:
    """``block``: a flagged image is not posted. ``spoiler``: it is posted as a spoiler. ``allow``: posted
    plainly in an age-restricted channel, as a spoiler elsewhere. An image nobody checked (the model has no
    safety checker) follows the installation's ``unchecked_policy`` instead, where ``allow`` posts it plainly:
    the operator chose to trust that model."""
    if nsfw is False:
        return Disposition.PLAIN
    if nsfw is None:
        return {
            "block": Disposition.WITHHELD,
            "spoiler": Disposition.SPOILER,
            "allow": Disposition.PLAIN,
        }[unchecked_policy]
    if policy == "block":
        return Disposition.WITHHELD
    if policy == "allow" and age_restricted:
        return Disposition.PLAIN
    return Disposition.SPOILER
