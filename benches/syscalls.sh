#!/usr/bin/env bash
# System calls per load + lookup + drop, by loader and library, counted by
# `strace -c -f` (noise-free): each case runs N times and once as a
# baseline with 0 loads; the difference divided by N is printed, with the
# calls that make it up.
#
#   benches/syscalls.sh            # every library and loader
#   benches/syscalls.sh zlib       # one library
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
cargo bench --bench counts --no-run 2>/dev/null
bin=$(ls -t target/release/deps/counts-* | grep -v '\.d$' | head -1)
libs=("${@:-example zlib sqlite3 gmp}")
loaders=(floor-copy floor-map floor-map-touch memdl-load memdl-load_fd memdl-system dlopen-now dlopen-lazy)

# "calls name" lines of one run's strace -c summary.
summary() {
  strace -f -c -o /dev/stdout "$bin" "$1" "$2" "$3" 2>/dev/null \
    | awk '$0 ~ /^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ { n = ($5 ~ /^[0-9]+$/) ? $6 : $5; if (n != "total") print $4, n }'
}

for lib in ${libs[*]}; do
  echo "== $lib: system calls per load (N=$N)"
  for loader in "${loaders[@]}"; do
    base=$(summary "$loader" "$lib" 0)
    full=$(summary "$loader" "$lib" "$N")
    join -1 2 -2 2 -a 2 -e 0 -o '2.2,1.1,2.1' \
        <(echo "$base" | sort -k2) <(echo "$full" | sort -k2) \
      | awk -v n="$N" -v who="$loader" '
          { d = ($3 - $2) / n; if (d > 0.01) { total += d; parts = parts sprintf(" %s=%.1f", $1, d) } }
          END { printf "%-14s %6.1f  %s\n", who, total, parts }'
  done
done
