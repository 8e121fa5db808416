#!/usr/bin/env bash
# Create .venv and install the pinned requirements (plus dev tools with --dev).
# The one install step of scripts/dashboard.sh and scripts/test.sh. It installs only
# when the requirements changed since the last install that covers what is asked:
# the dev set includes the base set, so the dashboard after the tests installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
reqs=requirements.txt
[[ "${1:-}" == "--dev" ]] && reqs=requirements-dev.txt
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
version=$(cat requirements*.txt pyproject.toml | sha256sum | cut -c1-16)
stamp=.venv/.installed-$version-$reqs
installed() {
  [[ -f "$stamp" ]] || { [[ "$reqs" == requirements.txt ]] && [[ -f .venv/.installed-$version-requirements-dev.txt ]]; }
}
if ! installed; then
  echo "installing $reqs into .venv (once, and again only when the requirements change)..." >&2
  log=.venv/install.log
  {
    .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
    .venv/bin/python -m pip install --disable-pip-version-check -r "$reqs" &&
    .venv/bin/python -m pip install --disable-pip-version-check --no-deps -e .
  } >"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "install failed; full log: $log" >&2; exit 1; }
  touch "$stamp"
fi
