"""How an image is posted under each NSFW policy (``sdbot.services.nsfw``)."""

from __future__ import annotations

import pytest

from sdbot.services.nsfw import Disposition, disposition

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
