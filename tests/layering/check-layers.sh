#!/bin/bash
# The layering that the build enforces, checked from the outside:
#   1. an include of a higher layer's header from a lower layer does not
#      compile with that layer's include roots (and a same-or-lower include
#      does, so the check cannot pass for a wrong reason);
#   2. no source includes a header of a layer above its own;
#   3. the built libraries define only qbak_ names (nm), the static one
#      included.
# Usage: check-layers.sh SRCDIR BUILDDIR CC
set -uo pipefail
src=$1 build=$2 cc=$3
fail=0
layers=(common formats bitmaps lib cli)
rank() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && echo "$i"; done; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. compile probes with each layer's include roots (its own and below).
roots_of() {
    local r i flags=""
    r=$(rank "$1")
    for i in "${!layers[@]}"; do
        if [ "$i" -le "$r" ]; then
            flags+=" -I$build/layers/${layers[$i]}"
        fi
    done
    if [ "$1" = lib ]; then
        flags+=" -I$src/include"
    fi
    echo "$flags"
}
header_of() {
    case $1 in
        common) echo common/error.h ;; formats) echo formats/image.h ;;
        bitmaps) echo bitmaps/dirty-bitmap.h ;; lib) echo lib/internal.h ;;
        cli) echo cli/cli.h ;;
    esac
}
for lower in common formats bitmaps lib; do
    for upper in "${layers[@]}"; do
        printf '#include "%s"\nint x;\n' "$(header_of "$upper")" >"$tmp/probe.c"
        # shellcheck disable=SC2046
        if $cc -std=c17 -D_GNU_SOURCE -fsyntax-only $(roots_of "$lower") \
               -iquote "$tmp" "$tmp/probe.c" 2>"$tmp/err"; then
            got=compiles
        else
            got=fails
        fi
        if [ "$(rank "$upper")" -gt "$(rank "$lower")" ]; then want=fails; else want=compiles; fi
        if [ "$got" != "$want" ]; then
            echo "layer $lower including $(header_of "$upper"): $got, expected it $want"
            sed 's/^/    /' "$tmp/err"
            fail=1
        fi
    done
done

# 2. every #include "LAYER/..." in a layer's sources names that layer or
#    one below it.
for layer in "${layers[@]}"; do
    for f in "$src/$layer"/*.[ch]; do
        while IFS= read -r inc; do
            target=${inc%%/*}
            r=$(rank "$target")
            [ -z "$r" ] && continue
            if [ "$r" -gt "$(rank "$layer")" ]; then
                echo "${f#$src/}: includes $inc, a layer above $layer"
                fail=1
            fi
        done < <(sed -n 's/^#include "\([a-z]*\/[^"]*\)".*/\1/p' "$f")
    done
done
if grep -l '#include "qbak.h"' "$src"/common/*.[ch] "$src"/formats/*.[ch] \
        "$src"/bitmaps/*.[ch] 2>/dev/null; then
    echo "the files above, below lib/, include the public qbak.h"
    fail=1
fi

# 3. exported names.
for lib in "$build/libqbak.a" "$build/libqbak.so"; do
    if [ ! -e "$lib" ]; then
        echo "$lib: missing"; fail=1; continue
    fi
    case $lib in
        *.so) names=$(nm -D --defined-only "$lib") ;;
        *)    names=$(nm -g --defined-only "$lib" | grep -v ':$' | grep -v '^$') ;;
    esac
    bad=$(awk 'NF == 3 { print $3 }' <<<"$names" | grep -v '^qbak_' || true)
    count=$(awk 'NF == 3 && $3 ~ /^qbak_/' <<<"$names" | wc -l)
    if [ -n "$bad" ]; then
        echo "$lib defines names without the qbak_ prefix:"; sed 's/^/    /' <<<"$bad"; fail=1
    fi
    if [ "$count" -lt 10 ]; then
        echo "$lib: only $count qbak_ names: the API is missing"; fail=1
    fi
done
exit $fail
