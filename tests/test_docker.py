"""The container files, checked by reading them (no Docker engine runs here): the image runs the same entry
point and health command as outside Docker, as a non-root user, with the token only from the environment."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _final_stage() -> str:
    return DOCKERFILE.rsplit("\nFROM ", 1)[1]


def _instruction(name: str) -> list[str]:
    """The JSON-array arguments of the final stage's ``name`` instruction."""
    match = re.search(rf"^{name} .*?(\[.*\])\s*$", _final_stage(), re.MULTILINE)
    assert match, f"the final stage has no {name} in exec form"
    return json.loads(match.group(1))


def test_the_image_starts_bot_py_and_checks_health_with_the_cli() -> None:
    assert _instruction("CMD") == ["python3", "bot.py"]
    assert _instruction("HEALTHCHECK") == ["python3", "-m", "sdbot", "health"]
    assert "COPY --from=build /src/bot.py /app/bot.py" in _final_stage()


def test_the_image_runs_as_a_non_root_user_with_volumes_for_data_and_models() -> None:
    final = _final_stage()
    user = re.search(r"^USER (\S+)$", final, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert _instruction("VOLUME") == ["/data", "/models"]
    assert "HF_HOME=/models" in final and "SDBOT_DB=/data/" in final


def test_no_secret_is_baked_into_the_image() -> None:
    assert "DISCORD_TOKEN" not in DOCKERFILE and "HF_TOKEN" not in DOCKERFILE
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored and "!.env.example" in ignored


def test_the_final_stage_installs_no_compiler() -> None:
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", _final_stage())


def test_compose_reserves_a_gpu_and_keeps_both_volumes() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    assert "driver: nvidia" in compose and "capabilities: [gpu]" in compose
    assert "sdbot-data:/data" in compose and "sdbot-models:/models" in compose
    assert "env_file: .env" in compose


def test_the_gpus_profile_adds_redis_with_a_password_and_persistence_and_a_worker_per_gpu() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    redis = compose.split("\n  redis:\n", 1)[1].split("\n\n", 1)[0]
    assert "profiles: [gpus]" in redis and '--requirepass "$$SDBOT_REDIS_PASSWORD"' in redis
    assert "--appendonly yes" in redis and "sdbot-redis:/data" in redis
    worker = compose.split("\n  worker-gpu1:\n", 1)[1].split("\n\n", 1)[0]
    assert "profiles: [gpus]" in worker and 'command: ["python3", "-m", "sdbot", "worker"]' in worker
    assert 'device_ids: ["1"]' in worker and "env_file: .env" in worker
