"""AUTOMATIC1111's prompt syntax: LoRA tags, attention weighting, BREAK, and the plain text of a prompt."""

from __future__ import annotations

import pytest

from sdbot.errors import PromptRejected
from sdbot.inference.prompt_syntax import (
    Fragment,
    has_weighting,
    lora_tags,
    parse_weighted,
    plain_text,
    split_loras,
)

UP, DOWN = 1.1, 1 / 1.1


def test_lora_tags_are_taken_out_with_their_weights_and_the_text_is_tidied() -> None:
    text, loras = split_loras("a cat, <lora:styles/ink:0.6>, on a mat <lora:detail> <lyco:grain:-1.5>")
    assert text == "a cat, on a mat"
    assert loras == (("styles/ink", 0.6), ("detail", 1.0), ("grain", -1.5))
    assert lora_tags(loras) == "<lora:styles/ink:0.6> <lora:detail:1> <lora:grain:-1.5>"
    assert split_loras("a (cat:1.2)  as typed") == ("a (cat:1.2)  as typed", ())


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        ("<lora:ink:0.5:0.8>", "one weight"),
        ("<lora::1>", "one weight"),
        ("<lora:ink:lots>", "not a number"),
        ("<lora:ink> and <lora:ink:0.3>", "named twice"),
        ("<hypernet:anime:1>", "LoRAs only"),
    ],
)
def test_a_lora_tag_that_cannot_be_read_is_refused_with_a_reason(prompt: str, says: str) -> None:
    with pytest.raises(PromptRejected, match=says):
        split_loras(prompt)


@pytest.mark.parametrize(
    ("prompt", "fragments"),
    [
        ("a red cat", [("a red cat", 1.0)]),
        ("a (red:1.5) cat", [("a ", 1.0), ("red", 1.5), (" cat", 1.0)]),
        ("a ( red : 0.5 ) cat", [("a ", 1.0), (" red ", 0.5), (" cat", 1.0)]),
        ("(red) [cat]", [("red", UP), (" ", 1.0), ("cat", DOWN)]),
        ("((red)) cat", [("red", UP * UP), (" cat", 1.0)]),
        ("((red:2) cat)", [("red", 2 * UP), (" cat", UP)]),
        (r"a \(red\) \[cat\] \\", [("a (red) [cat] \\", 1.0)]),
        ("a (red cat", [("a ", 1.0), ("red cat", UP)]),  # unclosed: to the end
        ("a red) cat:", [("a red) cat:", 1.0)]),  # stray closer and colon: text
        ("(cat:dog)", [("cat:dog", UP)]),
    ],
)
def test_a1111_weighting_reads_as_weighted_fragments(prompt: str, fragments: list) -> None:
    [section] = parse_weighted(prompt)
    assert [(f.text, f.weight) for f in section] == [(text, pytest.approx(w)) for text, w in fragments]


def test_break_starts_a_new_section_and_weights_span_it() -> None:
    assert parse_weighted("a cat BREAK (a dog BREAK a mat)") == [
        [Fragment("a cat")],
        [Fragment("a dog", pytest.approx(UP))],
        [Fragment("a mat", pytest.approx(UP))],
    ]
    assert parse_weighted("BREAKING news") == [[Fragment("BREAKING news")]]


@pytest.mark.parametrize("prompt", ["a [cat:dog:0.5]", "a [cat|dog]", "[cat:10]"])
def test_prompt_editing_and_alternation_are_refused_not_read_as_text(prompt: str) -> None:
    with pytest.raises(PromptRejected, match="not supported"):
        parse_weighted(prompt)
    assert parse_weighted(r"a \[cat:dog\]") == [[Fragment("a [cat:dog]")]]


def test_plain_text_is_what_a_family_without_weighting_reads() -> None:
    assert plain_text(r"a ((red:1.3)) [cat] BREAK on \(a\) mat") == "a red cat on (a) mat"
    assert has_weighting("a (red) cat") and has_weighting("a cat BREAK a dog")
    assert not has_weighting("a red cat, on a mat")
