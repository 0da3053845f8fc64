#!/bin/bash
# `saeembed demo`, wall time, two installs side by side (alternated, each run in a new empty folder).
#   bash benchmarks/demo_ab.sh OLD_VENV NEW_VENV [RUNS]
# Make each venv the same way (python3 -m venv V && V/bin/pip install torch==2.13.0 -e CHECKOUT) so that
# only the checkout differs: a Python with more packages installed imports transformers more slowly.
set -u
old=$1; new=$2; runs=${3:-3}
for i in $(seq "$runs"); do
  for side in old new; do
    venv=${!side}; dir=$(mktemp -d); cd "$dir"
    s=$(date +%s.%N); "$venv/bin/saeembed" demo > "$dir/demo.log" 2>&1; rc=$?; e=$(date +%s.%N)
    printf '%s run %d rc=%d %.2f s\n' "$side" "$i" "$rc" "$(echo "$e - $s" | bc)"
    cd / && rm -rf "$dir"
  done
done
