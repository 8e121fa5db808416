#!/usr/bin/env bash
# The main job: install what is needed, then open the dashboard on the offline engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/serve_dashboard.py "$@"
