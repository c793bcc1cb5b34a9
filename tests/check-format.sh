#!/bin/sh
# Fails when a C source differs from what clang-format makes of it.
set -eu
top=$1
cd "$top"
files=$(find daemon plugins tests bench -name '*.[ch]' | sort)
"${CLANG_FORMAT:-clang-format}" --dry-run --Werror $files
echo "format: $(echo "$files" | wc -l) files clean"
