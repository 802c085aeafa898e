#!/usr/bin/env bash
# Create .venv and install wszoo with its dependencies. torch==2.13.0 goes first: it is the local CPU
# wheel, and every later requirement is a range it satisfies, so no CUDA packages are pulled in.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[dev]"
