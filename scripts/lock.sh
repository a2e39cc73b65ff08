#!/bin/sh
# Rewrites the lock files under requirements/ from pyproject.toml. Run it after
# changing a dependency there, and commit what it writes; the static tests fail
# while pyproject.toml asks for something the locks do not hold.
#
#   scripts/lock.sh                  keep every pin that still fits, resolve only what changed
#   scripts/lock.sh --upgrade        move everything to the newest releases that fit
#   scripts/lock.sh --upgrade-package fastapi   move one package (and what it needs)
#
# One resolution for every Python from 3.11 (CI's machine) up, 3.12 in the
# images, on Linux, macOS and Windows, every pin with its sha256 hashes, so that
# pip refuses any file but the ones resolved here:
#   requirements/dev.txt      the project with all its extras: CI and developers
#   requirements/runtime.txt  the project alone, at dev.txt's versions: the images
#   requirements/build.txt    pip and the build backend, at dev.txt's versions
set -eu

cd "$(dirname "$0")/.."

# uv resolves for all those Pythons and platforms at once (pip-tools resolves
# for the interpreter it runs on). Pinned, so that two runs on one pyproject.toml
# write the same files; installed once per version into the user's cache.
uv_version=0.13.9
uv_home=${XDG_CACHE_HOME:-$HOME/.cache}/eventpipe/uv-$uv_version
if [ ! -x "$uv_home/bin/uv" ]; then
  python3 -m venv "$uv_home"
  "$uv_home/bin/python" -m pip install -q "uv==$uv_version"
fi

compile() {
  "$uv_home/bin/uv" pip compile --quiet --no-config --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command scripts/lock.sh "$@"
}

compile pyproject.toml --all-extras -o requirements/dev.txt "$@"
compile pyproject.toml -c requirements/dev.txt -o requirements/runtime.txt "$@"
# The tools that install and build eventpipe: what [build-system] requires, what
# hatchling adds for an editable install (its get_requires_for_build_editable),
# and pip itself.
python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
  | { cat; echo editables; echo pip; } \
  | compile - -c requirements/dev.txt -o requirements/build.txt "$@"
echo "locked: requirements/dev.txt, requirements/runtime.txt, requirements/build.txt"
