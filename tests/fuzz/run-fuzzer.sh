#!/bin/sh
# Runs one libFuzzer harness for SPARROW_FUZZ_SECONDS (default 30) from its
# seeds and the crashes found so far; what it finds new stays in a
# temporary directory, a crash goes to ARTIFACTS.
# Usage: run-fuzzer.sh HARNESS SEEDS CRASHES ARTIFACTS
set -eu
harness=$1 seeds=$2 crashes=$3 artifacts=$4
seconds=${SPARROW_FUZZ_SECONDS:-30}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$artifacts"
set -- "$work" "$seeds"
if [ -d "$crashes" ]; then set -- "$@" "$crashes"; fi
status=0
"$harness" -max_total_time="$seconds" -timeout=20 -artifact_prefix="$artifacts/" \
  -print_final_stats=1 "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "$(basename "$harness") failed (exit $status): the input is in $artifacts; once fixed, copy it to $crashes/ (a regression test of the unit suite)" >&2
  # libFuzzer's own exit status for a crash is 77, which meson reads as
  # a skip: a failure is a failure.
  exit 1
fi
