"""A1111's ``parameters`` text with LoRAs, embeddings and samplers: written as the web UI writes it, and read
back from the web UI's own."""

from __future__ import annotations

from sdbot.inference.pngmeta import ImageParameters, LoraUse, format_parameters, parse_parameters


def test_loras_samplers_and_embeddings_are_written_as_the_web_ui_writes_them_and_read_back() -> None:
    params = ImageParameters(
        prompt="a cat,\nwearing a (hat:1.2)",
        negative_prompt="blurry, badhands",
        steps=30,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        guidance=7.0,
        seed=42,
        width=512,
        height=512,
        model="sd15",
        loras=(LoraUse("styles/ink", 0.8, "3c2e9d0a41f7"), LoraUse("detail", -1.0, "00aa11bb22cc")),
        embeddings={"badhands": "9f0b1c2d3e4f"},
    )
    text = format_parameters(params)
    assert text == (
        "a cat,\nwearing a (hat:1.2) <lora:styles/ink:0.8> <lora:detail:-1>\n"
        "Negative prompt: blurry, badhands\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, "
        'Model: sd15, Lora hashes: "styles/ink: 3c2e9d0a41f7, detail: 00aa11bb22cc", '
        'TI hashes: "badhands: 9f0b1c2d3e4f"'
    )
    assert parse_parameters(text) == params


def test_the_web_uis_own_lora_parameters_read_back() -> None:
    text = (
        "masterpiece, 1girl, <lora:add_detail:0.5>, <lora:hypernet_like:1:0.5>\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x768, "
        'Model hash: 6ce0161689, Model: v1-5, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
    )
    params = parse_parameters(text)
    # a tag this bot would refuse (two weights) leaves the prompt as it was
    assert params.prompt == "masterpiece, 1girl, <lora:add_detail:0.5>, <lora:hypernet_like:1:0.5>"
    assert params.loras == ()
    params = parse_parameters(text.replace(", <lora:hypernet_like:1:0.5>", ""))
    assert params.prompt == "masterpiece, 1girl"
    assert params.loras == (LoraUse("add_detail", 0.5, "7c6bad76eb54"),)
    assert (params.sampler, params.schedule_type) == ("Euler a", "Automatic")
    assert params.extra == {"Model hash": "6ce0161689", "Version": "v1.10.1"}
