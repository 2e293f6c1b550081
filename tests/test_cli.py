"""The command line: ``generate`` writes PNGs from the tiny model, ``doctor`` reports on it, and bad input
gets one line on stderr."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from PIL import Image

from sdbot.__main__ import main
from sdbot.inference.pngmeta import read_parameters

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SDBOT_* settings from the developer's shell, and no ``.env`` in the working folder."""
    for name in list(os.environ):
        if name.startswith("SDBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_generate_writes_png_files_and_prints_paths_and_seeds(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cat.png"
    env = {
        **os.environ,
        "SDBOT_MODEL": str(tiny_model_dir),
        "SDBOT_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # tiny tensors: a second thread only adds hand-off cost
    }
    options = ["--size", "64x64", "--steps", "2", "--seed", "5", "--count", "2", "--negative", "blurry"]
    done = subprocess.run(
        [sys.executable, "-m", "sdbot", "generate", "a red cat", *options, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    paths = [tmp_path / "cat-5.png", tmp_path / "cat-6.png"]
    assert done.stdout.splitlines() == [f"{paths[0]}  seed=5", f"{paths[1]}  seed=6"]
    for path, seed in zip(paths, (5, 6), strict=True):
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))
        params = read_parameters(path.read_bytes())
        assert (params.prompt, params.negative_prompt, params.seed, params.steps) == (
            "a red cat",
            "blurry",
            seed,
            2,
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "sdbot: Steps must be from 1 to 150 (got 0)."),
        (["--count", "9"], "sdbot: The image count must be from 1 to 4 (got 9)."),
        (["--size", "500x512"], "sdbot: The width must be a multiple of 8 from 64 to 2048, not 500."),
        (["--size", "big"], "sdbot: argument --size: size must look like 512x768, got 'big'"),
        (["--steps", "many"], "sdbot: argument --steps: invalid int value: 'many'"),
    ],
)
def test_bad_generate_arguments_print_one_line_and_exit_2(
    clean_env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(["generate", "a red cat", *args]))
    assert exited.value.code == 2
    assert capsys.readouterr().err == message + "\n"


def test_bad_argument_is_one_line_on_stderr_from_a_fresh_process(clean_env: Path) -> None:
    """In-process tests share already imported modules; a fresh process shows nothing else is printed first
    (torch and diffusers are not even imported for a request that cannot run)."""
    done = subprocess.run(
        [sys.executable, "-m", "sdbot", "generate", "a red cat", "--steps", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (done.stdout, done.stderr) == ("", "sdbot: Steps must be from 1 to 150 (got 0).\n")


def test_output_folder_that_cannot_be_made_fails_before_the_model_loads(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = clean_env / "blocker"
    blocker.write_text("a file, not a folder")
    # No model could load here (the hub is offline): exit 2, not 1, shows none was tried.
    assert main(["generate", "a red cat", "--out", str(blocker / "cat.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sdbot: --out {blocker / 'cat.png'}: cannot make the folder {blocker} (")
    assert err.count("\n") == 1


def test_bad_setting_prints_one_line_and_exits_2(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDBOT_DTYPE", "fp8")
    assert main(["doctor"]) == 2
    assert capsys.readouterr().err == (
        "sdbot: SDBOT_DTYPE='fp8' is not allowed: use one of auto, float16, bfloat16, float32\n"
    )


def test_missing_model_file_fails_with_one_line(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "a red cat", "--model", str(clean_env / "nope.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err


def test_doctor_reports_versions_device_model_and_a_timed_generation(
    clean_env: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDBOT_DEVICE", "cpu")
    assert main(["doctor", "--model", str(tiny_model_dir), "--size", "64x64"]) == 0
    report = " ".join(capsys.readouterr().out.split())  # the columns' spacing does not matter here
    assert f"python {platform.python_version()}" in report
    for package in ("torch", "diffusers", "transformers", "discord.py"):
        assert f"{package} {metadata.version(package)}" in report
    assert "models tiny-model model load ok in" in report
    assert (
        "device cpu (float32) model tiny-model: SD 1.x (StableDiffusionPipeline) safety check yes" in report
    )
    assert re.search(r"generation 64x64, 4 steps: \d+\.\d\d s \(denoise", report)


def library_file(folder: Path, **sources: Path) -> Path:
    """A model library naming each source, the first one the default."""
    path = folder / "models.toml"
    path.write_text("".join(f'[models.{name}]\nsource = "{source}"\n' for name, source in sources.items()))
    return path


def test_doctor_checks_every_model_of_the_library_at_its_own_size(
    clean_env: Path, tiny_family, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDBOT_DEVICE", "cpu")
    monkeypatch.setenv("SDBOT_SAFETY_CHECKER", "none")
    models = library_file(clean_env, sd=tiny_family("sd1"), xl=tiny_family("sdxl"))
    monkeypatch.setenv("SDBOT_MODELS", str(models))
    monkeypatch.setattr("sdbot.__main__.DOCTOR_STEPS", 2)
    assert main(["doctor"]) == 0
    report = " ".join(capsys.readouterr().out.split())
    assert "models sd, xl" in report
    assert "model sd: SD 1.x" in report and "generation 512x512, 2 steps" in report
    assert "model xl: SDXL" in report and "generation 1024x1024, 2 steps" in report


def test_models_lists_the_library_without_loading_it(
    clean_env: Path, tiny_family, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = library_file(clean_env, sd=tiny_family("sd1"), xl=tiny_family("sdxl"))
    (clean_env / "models.toml").write_text(
        models.read_text() + '[models.hub]\nsource = "someone/not-downloaded"\n', encoding="utf-8"
    )
    monkeypatch.setenv("SDBOT_MODELS", str(models))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        rf"sd \(default\)  sd1  on disk  0\.0 GiB weights  {re.escape(str(tiny_family('sd1')))}", lines[0]
    )
    assert lines[1].startswith("xl  sdxl  on disk  0.0 GiB weights  ")
    assert (
        lines[2]
        == "hub  family unknown until downloaded  not downloaded  size unknown  someone/not-downloaded"
    )


def test_generate_takes_a_model_of_the_library_and_its_defaults(
    clean_env: Path, tiny_family, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDBOT_DEVICE", "cpu")
    models = library_file(clean_env, sd=tiny_family("sd1"), flux=tiny_family("flux-schnell"))
    monkeypatch.setenv("SDBOT_MODELS", str(models))
    monkeypatch.setenv("SDBOT_SAFETY_CHECKER", "none")
    assert main(["generate", "a cat", "--model", "flux", "--size", "64x64", "--seed", "3"]) == 0
    path = Path(capsys.readouterr().out.split()[0])
    params = read_parameters(path.read_bytes())
    assert (params.model, params.steps, params.guidance) == ("flux", 4, 0.0)  # Flux schnell's own defaults
    assert main(["generate", "a cat", "--model", "flux", "--size", "72x64"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main(["generate", "a cat", "--model", "flux", "--size", "64x64", "--sampler", "Euler a"]) == 0
    written = read_parameters(Path(capsys.readouterr().out.split()[0]).read_bytes())
    assert (written.sampler, written.schedule_type) == ("Euler a", "Simple")
    assert main(["generate", "a cat <lora:ink:1:2>", "--model", "flux"]) == 2
    assert "one weight for the whole LoRA" in capsys.readouterr().err


def test_doctor_refuses_a_bad_size_before_loading_anything(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--size", "100x64"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "sdbot: The width must be a multiple of 8 from 64 to 2048, not 100.\n"


def test_doctor_says_when_the_model_does_not_load(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDBOT_DEVICE", "cpu")
    assert main(["doctor", "--model", str(clean_env)]) == 1
    assert "model load FAILED: could not load model" in " ".join(capsys.readouterr().out.split())


def test_worker_needs_a_redis_url_and_refuses_one_without_a_password(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker"]) == 2
    assert capsys.readouterr().err.startswith("sdbot: SDBOT_REDIS_URL is not set")
    monkeypatch.setenv("SDBOT_REDIS_URL", "redis://10.0.0.5:6379/0")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no password" in err
