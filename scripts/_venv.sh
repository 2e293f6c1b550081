# Shared by scripts/bot, scripts/test and scripts/test-esrgan: make a virtual environment once, then
# reinstall only when pyproject.toml changes.
# Usage: . scripts/_venv.sh KIND   (KIND: "" for the bot, "test" for the test suite in .venv, "esrgan" for
# the spandrel tests in .venv-esrgan)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"
kind="${1:-}"
case "$kind" in
    "") venv=.venv extras="" ;;
    test) venv=.venv extras="[test]" ;;
    # spandrel imports torchvision, and PyPI's torchvision wheels fail beside the CPU build of torch 2.13.0
    # that the main suite uses; this pair (a CUDA build, about 5.5 GB) runs on the CPU too.
    esrgan) venv=.venv-esrgan extras="[test,esrgan]" pins=("torch==2.14.1" "torchvision==0.29.1") ;;
    *) echo "scripts/_venv.sh: unknown kind '$kind'" >&2; exit 2 ;;
esac
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.sdbot-installed-${kind:-run}-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    if [ "$kind" = "test" ] && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
        # The tests run on the CPU: this exact release is the one a CPU build is kept for on CI machines.
        "$venv/bin/pip" install --quiet 'torch==2.13.0'
    fi
    # Pinned on the same command line, so that the extras' requirements cannot move torch.
    "$venv/bin/pip" install --quiet -e ".$extras" ${pins[@]+"${pins[@]}"}
    touch "$stamp"
fi
