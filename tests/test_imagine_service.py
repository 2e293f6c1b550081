"""The rules of ``sdbot.services.imagine`` that need no Discord: how an image is posted under each NSFW
policy, and how a size option is read."""

from __future__ import annotations

import pytest

from sdbot.errors import InvalidRequest
from sdbot.services.imagine import Disposition, disposition, parse_size

PLAIN, SPOILER, WITHHELD = Disposition.PLAIN, Disposition.SPOILER, Disposition.WITHHELD


@pytest.mark.parametrize(
    ("nsfw", "policy", "age_restricted", "expected"),
    [
        (False, "block", False, PLAIN),  # an image the checker passed is always posted plainly
        (True, "block", True, WITHHELD),
        (True, "spoiler", True, SPOILER),
        (True, "spoiler", False, SPOILER),
        (True, "allow", True, PLAIN),
        (True, "allow", False, SPOILER),
    ],
)
def test_flagged_images_follow_the_server_policy(nsfw, policy, age_restricted, expected):
    assert (
        disposition(nsfw, policy=policy, unchecked_policy="allow", age_restricted=age_restricted) is expected
    )


@pytest.mark.parametrize(
    ("unchecked_policy", "expected"), [("block", WITHHELD), ("spoiler", SPOILER), ("allow", PLAIN)]
)
def test_unchecked_images_follow_the_installation_policy_whatever_the_server_says(unchecked_policy, expected):
    for policy in ("block", "spoiler", "allow"):
        assert (
            disposition(None, policy=policy, unchecked_policy=unchecked_policy, age_restricted=False)
            is expected
        )


def test_sizes_are_width_by_height():
    assert parse_size("768x512") == (768, 512)
    assert parse_size(" 512 X 768 ") == (512, 768)
    for bad in ("big", "512x", "512*512", "-64x64"):
        with pytest.raises(InvalidRequest, match="WIDTHxHEIGHT"):
            parse_size(bad)
