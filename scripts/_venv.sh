# Shared by scripts/bot and scripts/test: make .venv once, then reinstall only when pyproject.toml changes.
# Usage: . scripts/_venv.sh EXTRA   (EXTRA: "" for the bot, "test" for the test suite)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
extra="${1:-}"
stamp=".venv/.sdbot-installed-${extra:-run}-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    if [ "$extra" = "test" ] && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
        # The tests run on the CPU: this exact release is the one a CPU build is kept for on CI machines.
        .venv/bin/pip install --quiet 'torch==2.13.0'
    fi
    .venv/bin/pip install --quiet -e ".${extra:+[$extra]}"
    touch "$stamp"
fi
