"""A job's typed parameters: outpainting fields survive the ledger's JSON and are checked like the rest."""

from __future__ import annotations

import pytest

from sdbot.errors import InvalidRequest
from sdbot.params import JobKind, JobParams, PanDirection, check_params


def test_pan_and_zoom_round_trip_through_json_typed() -> None:
    panned = JobParams("a coast", seed=1, strength=1.0, pan=PanDirection.LEFT)
    back = JobParams.from_json(panned.to_json())
    assert back == panned and back.pan is PanDirection.LEFT and back.outpaint == "pan left"
    assert JobParams.from_json(JobParams("a coast", zoom=1.5).to_json()).outpaint == "zoom 1.5x"
    assert panned.batch_key() != JobParams("a coast", seed=1, strength=1.0, pan=PanDirection.UP).batch_key()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"zoom": 3.0}, r"Zoom Out is 1\.5x or 2x, not 3x"),
        ({"zoom": 2.0, "pan": PanDirection.UP}, "zooms out or pans, not both"),
    ],
)
def test_outpainting_fields_are_checked(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_params(JobParams("a coast", **fields))


def test_only_the_text_kinds_run_without_a_picture() -> None:
    text_kinds = {JobKind.TXT2IMG, JobKind.REROLL, JobKind.REMIX}
    assert {kind for kind in JobKind if not kind.from_image} == text_kinds
