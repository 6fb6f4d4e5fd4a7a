#!/usr/bin/env bash
# Fetch what run.sh needs on the GPU machine beside this checkout (which has no network there):
#   .whl/         the wheels of wheels.txt (cp312 manylinux x86_64), git-ignored through info/exclude
#   .whl/COMMIT   this checkout's commit (the GPU machine gets no .git)
# usage:  bash bench/gpu/prepare.sh        (then name .whl in the device run's `carry`)
set -eu
cd "$(dirname "$0")/../.."
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")" .whl
grep -qxF /.whl/ "$EXCLUDE" 2>/dev/null || echo /.whl/ >> "$EXCLUDE"
PY=${PY:-python3}
grep -v '^#' bench/gpu/wheels.txt | while read -r spec; do
  [ -n "$spec" ] || continue
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec"
done
git rev-parse HEAD > .whl/COMMIT
echo "wheels: $(ls .whl/*.whl | wc -l); size: $(du -sh .whl | cut -f1)"
