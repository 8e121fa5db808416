#!/usr/bin/env bash
# Create .venv and install the pinned requirements (plus dev tools with --dev).
# Re-running is cheap: it reinstalls only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
reqs=requirements.txt
[[ "${1:-}" == "--dev" ]] && reqs=requirements-dev.txt
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements*.txt pyproject.toml | sha256sum | cut -c1-16)-$(basename "$reqs")
if [[ ! -f "$stamp" ]]; then
  echo "installing $reqs into .venv (first time only)..." >&2
  log=.venv/install.log
  {
    .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
    .venv/bin/python -m pip install --disable-pip-version-check -r "$reqs" &&
    .venv/bin/python -m pip install --disable-pip-version-check --no-deps -e .
  } >"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "install failed; full log: $log" >&2; exit 1; }
  touch "$stamp"
fi
