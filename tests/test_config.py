"""Settings: defaults, ``.env`` under the real environment, one-line errors for bad values, secrets kept
out of ``repr``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdbot.config import DEFAULT_MODEL, Settings, load_settings
from sdbot.errors import ConfigError

FLAG = "1 or 0 (true/false, yes/no, on/off)"


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    settings = load_settings({}, dotenv_path=tmp_path / "absent.env")
    assert settings == Settings()
    assert settings.model == DEFAULT_MODEL == "CompVis/stable-diffusion-v1-4"
    assert (settings.device, settings.dtype, settings.offload) == ("auto", "auto", "none")
    assert settings.db_path == Path("data/sdbot.sqlite3")
    assert settings.discord_token is None and settings.dev_guild is None


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nDISCORD_TOKEN=from-file\nSDBOT_MODEL=./models/file-model\nSDBOT_STEPS_UNUSED=1\n"
        "SDBOT_DEVICE=cpu\nSDBOT_DEV_GUILD=123\nSDBOT_ATTENTION_SLICING=yes\n",
        encoding="utf-8",
    )
    settings = load_settings({"SDBOT_MODEL": "org/env-model", "SDBOT_DTYPE": "Float16"}, dotenv_path=dotenv)
    assert settings.discord_token == "from-file"
    assert settings.model == "org/env-model"
    assert (settings.device, settings.dtype) == ("cpu", "float16")
    assert settings.dev_guild == 123
    assert settings.attention_slicing is True


def test_typed_values_are_parsed(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SDBOT_DB": "/var/lib/sdbot/db.sqlite3",
            "SDBOT_DAILY_QUOTA": "0",
            "SDBOT_JOB_TIMEOUT": "90.5",
            "SDBOT_COMPILE": "on",
            "SDBOT_VAE_TILING": "false",
            "SDBOT_LOG_LEVEL": "debug",
            "SDBOT_MODEL_CONFIG": "/models/sd15-config",
            "SDBOT_PREVIEW_DECODER": "madebyollin/taesd",
            "SDBOT_UPSCALER": "/models/4x-UltraSharp.pth",
            "SDBOT_MAX_UPLOAD_MB": "25",
            "SDBOT_LORA_DIR": str(tmp_path),
            "SDBOT_MAX_LORAS": "0",
        },
        dotenv_path=None,
    )
    assert settings.db_path == Path("/var/lib/sdbot/db.sqlite3")
    assert (settings.daily_quota, settings.job_timeout) == (0, 90.5)
    assert (settings.compile, settings.vae_tiling, settings.log_level) == (True, False, "DEBUG")
    assert (settings.model_config, settings.preview_decoder) == ("/models/sd15-config", "madebyollin/taesd")
    assert (settings.upscaler, settings.max_upload_mb) == ("/models/4x-UltraSharp.pth", 25)
    assert (settings.lora_dir, settings.embeddings_dir, settings.max_loras) == (tmp_path, None, 0)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("SDBOT_DEVICE", "gpu", "one of auto, cuda, mps, cpu"),
        ("SDBOT_DTYPE", "fp8", "one of auto, float16, bfloat16, float32"),
        ("SDBOT_UNCHECKED_POLICY", "hide", "one of block, spoiler, allow"),
        ("SDBOT_OFFLOAD", "disk", "one of none, model, sequential"),
        ("SDBOT_LOG_LEVEL", "TRACE", "one of DEBUG, INFO, WARNING, ERROR"),
        ("SDBOT_COMPILE", "maybe", FLAG),
        ("SDBOT_VAE_TILING", "2", FLAG),
        ("SDBOT_DEV_GUILD", "my-server", "a whole number of at least 1"),
        ("SDBOT_DEV_GUILD", "0", "a whole number of at least 1"),
        ("SDBOT_DAILY_QUOTA", "-1", "a whole number of at least 0"),
        ("SDBOT_MAX_BATCH", "65", "a whole number from 1 to 64"),
        ("SDBOT_JOB_TIMEOUT", "soon", "a number of at least 1"),
        ("SDBOT_MAX_UPLOAD_MB", "0", "a whole number from 1 to 100"),
        ("SDBOT_MAX_LORAS", "11", "a whole number from 0 to 10"),
        ("SDBOT_EMBEDDINGS_DIR", "/no/such/folder", "an existing folder"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value}, dotenv_path=None)
    message = str(raised.value)
    assert message == f"{name}={value!r} is not allowed: use {allowed}"
    assert "\n" not in message


def test_tokens_never_appear_in_repr() -> None:
    settings = load_settings(
        {"DISCORD_TOKEN": "MTIz.secret-token", "HF_TOKEN": "hf_secret"}, dotenv_path=None
    )
    assert settings.discord_token == "MTIz.secret-token" and settings.hf_token == "hf_secret"
    assert "secret" not in repr(settings)
    assert "secret" not in str(settings)


def test_memory_budgets_read_as_bytes_and_a_bad_one_says_how_to_write_it() -> None:
    settings = load_settings({"SDBOT_GPU_MEMORY": "20GiB", "SDBOT_CPU_MEMORY": "1500 MiB"}, dotenv_path=None)
    assert (settings.gpu_memory, settings.cpu_memory) == (20 * 2**30, 1500 * 2**20)
    assert load_settings({"SDBOT_GPU_MEMORY": "24"}, dotenv_path=None).gpu_memory == 24 * 2**30
    assert load_settings({"SDBOT_GPU_MEMORY": "8GB"}, dotenv_path=None).gpu_memory == 8 * 10**9
    with pytest.raises(
        ConfigError, match=r"^SDBOT_GPU_MEMORY='lots' is not allowed: use a size such as 24GiB"
    ):
        load_settings({"SDBOT_GPU_MEMORY": "lots"}, dotenv_path=None)


def test_the_standalone_safety_checker_can_be_switched_off() -> None:
    assert Settings().safety_checker == "CompVis/stable-diffusion-safety-checker"
    assert load_settings({"SDBOT_SAFETY_CHECKER": "none"}, dotenv_path=None).safety_checker is None
    assert load_settings({"SDBOT_SAFETY_CHECKER": "/models/checker"}, dotenv_path=None).safety_checker == (
        "/models/checker"
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@gpu-hub:6379/0",
        "rediss://:s3cret@gpu-hub.example:6380/1",
        "redis://localhost:6379/0",  # no password, but on this machine
        "redis://127.0.0.1:6379",
        "redis://[::1]:6379",
        "unix:///run/redis/redis.sock",
    ],
)
def test_a_redis_url_with_a_password_or_on_this_machine_is_accepted(url: str) -> None:
    assert load_settings({"SDBOT_REDIS_URL": url}, dotenv_path=None).redis_url == url


def test_a_password_less_redis_url_to_another_machine_is_refused_and_urls_stay_out_of_repr() -> None:
    with pytest.raises(ConfigError, match=r"^SDBOT_REDIS_URL \(redis://gpu-hub:6379/0\) has no password"):
        load_settings({"SDBOT_REDIS_URL": "redis://gpu-hub:6379/0"}, dotenv_path=None)
    with pytest.raises(ConfigError, match="must start with redis://, rediss://, unix://"):
        load_settings({"SDBOT_REDIS_URL": "http://gpu-hub"}, dotenv_path=None)
    settings = load_settings({"SDBOT_REDIS_URL": "redis://:s3cret@gpu-hub:6379/0"}, dotenv_path=None)
    assert "s3cret" not in repr(settings)
    assert settings.local_engine is True and settings.worker_heartbeat == 1.0

