#!/usr/bin/env bash
# The test suite: install what is needed (Python packages, and Debian's chromium for
# the browser test when this machine can apt-get), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# Debian's chromium for the browser test; iproute2's `ip` for the Ray cluster test, which
# runs `ray start --head` in a network namespace that has only a loopback interface.
missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)
if (( ${#missing[@]} )) && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  echo "installing Debian's ${missing[*]} for the tests..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export LITELLM_LOCAL_MODEL_COST_MAP=True
exec .venv/bin/python -m pytest "$@"
