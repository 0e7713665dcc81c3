#!/usr/bin/env bash
# Instructions per deferred closure for each mechanism at n = 1, 8 and 1000 closures per
# scope, counted by cachegrind: (Ir of SCOPES scopes of n closures - Ir of SCOPES empty
# scopes) / (SCOPES * n). Exact and repeatable, whatever else the machine is doing.
# Usage: benches/instructions.sh [SCOPES]   (default 20000). The last line is the cost of an
# empty scope created and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
scopes=${1:-20000}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "could not build benches/instructions.rs" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Total instructions of one run, from cachegrind's summary line.
instructions() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$tmp/out" "$bin" "$@" \
    2>&1 >/dev/null | sed -n 's/.*I *refs: *\([0-9,]*\).*/\1/p' | tr -d ,
}

printf '%-24s %10s %10s %10s\n' "instructions per defer" "n = 1" "n = 8" "n = 1000"
"$bin" | while IFS=$'\t' read -r index name; do
  row=$(printf '%-24s' "$name")
  for n in 1 8 1000; do
    k=$scopes
    [ "$n" -eq 1000 ] && k=$((scopes / 100))
    full=$(instructions "$index" "$n" "$k")
    empty=$(instructions "$index" 0 "$k")
    row+=$(awk -v f="$full" -v e="$empty" -v k="$k" -v n="$n" 'BEGIN { printf " %10.1f", (f - e) / (k * n) }')
  done
  echo "$row"
done

# An empty scope created and dropped, over the same harness calling nothing: the scope's own
# cost plus the stack frame its function needs for the scope's storage.
direct=$("$bin" | awk -F'\t' '$2 == "direct call" { print $1 }')
scope=$("$bin" | awk -F'\t' '$2 == "Scope::defer" { print $1 }')
base=$(instructions "$direct" 0 "$scopes")
empty=$(instructions "$scope" 0 "$scopes")
awk -v b="$base" -v e="$empty" -v k="$scopes" 'BEGIN { printf "%-24s %10.1f\n", "empty Scope (per scope)", (e - b) / k }'
