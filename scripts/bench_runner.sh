#!/usr/bin/env bash
# Side-by-side: `torc-ledger run` on N no-op jobs with -j 2 vs the same N `bash -c true` through
# `xargs -P2`. Prints the median wall time of each and the runner's per-job overhead
# ((median torc - median xargs) / N, in ms). The target is < 5 ms/job.
#
#   scripts/bench_runner.sh            # 1000 jobs, 5 runs each
#   JOBS=200 RUNS=3 scripts/bench_runner.sh
#   HYPERFINE=1 scripts/bench_runner.sh  # time with hyperfine when it is installed
#
# Every run gets a fresh --ledger and -o directory in one temporary directory, which is removed
# at the end (not between runs: on some file systems creating files right after deleting
# thousands is slower, which would charge one run's cleanup to the next run).
set -euo pipefail

JOBS=${JOBS:-1000}
RUNS=${RUNS:-5}
HYPERFINE=${HYPERFINE:-0}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

echo "building the release binary..." >&2
cargo build --release --quiet --bin torc-ledger
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-$root/target}/release/torc-ledger"
[[ -x $bin ]] || { echo "no binary at $bin" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/torc-bench-runner.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

spec="$tmp/spec.yaml"
{
    echo "name: noop_${JOBS}"
    echo "description: ${JOBS} independent no-op jobs"
    echo "jobs:"
    for ((i = 1; i <= JOBS; i++)); do
        echo "  - name: j$i"
        echo "    command: \"true\""
    done
} >"$spec"

run_no=0
# One `torc-ledger run` in fresh directories; the submit directory is the run's own directory.
torc_once() {
    run_no=$((run_no + 1))
    local d="$tmp/run$run_no"
    mkdir -p "$d"
    (cd "$d" && "$bin" --ledger "$d/ledger" -o "$d/out" run "$spec" -j 2 >"$d/stdout" 2>"$d/stderr") || {
        echo "torc-ledger run failed (run $run_no):" >&2
        cat "$d/stderr" >&2
        exit 1
    }
}

xargs_once() {
    seq "$JOBS" | xargs -P2 -I{} bash -c true
}

now() { date +%s.%N; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

torc_times=()
xargs_times=()

if [[ $HYPERFINE == 1 ]] && command -v hyperfine >/dev/null; then
    export bin spec tmp JOBS
    csv="$tmp/hyperfine.csv"
    hyperfine --warmup 1 --runs "$RUNS" --export-csv "$csv" \
        --prepare 'd=$(mktemp -d "$tmp/hf.XXXXXX"); echo "$d" >"$tmp/current"' \
        --command-name torc \
        'd=$(cat "$tmp/current"); cd "$d" && "$bin" --ledger "$d/ledger" -o "$d/out" run "$spec" -j 2 >/dev/null 2>&1' \
        --command-name xargs \
        'seq "$JOBS" | xargs -P2 -I{} bash -c true' >&2
    # command,mean,stddev,median,user,system,min,max
    torc_med=$(awk -F, '$1 == "torc" { print $4 }' "$csv")
    xargs_med=$(awk -F, '$1 == "xargs" { print $4 }' "$csv")
else
    echo "warming up..." >&2
    torc_once
    xargs_once
    for ((r = 1; r <= RUNS; r++)); do
        # Alternate, so that a slow spell of the machine hits both sides.
        t0=$(now)
        torc_once
        t1=$(now)
        xargs_once
        t2=$(now)
        torc_times+=("$(awk "BEGIN { print $t1 - $t0 }")")
        xargs_times+=("$(awk "BEGIN { print $t2 - $t1 }")")
        printf 'run %d/%d: torc-ledger %.3f s, xargs %.3f s\n' "$r" "$RUNS" "${torc_times[-1]}" "${xargs_times[-1]}" >&2
    done
    torc_med=$(printf '%s\n' "${torc_times[@]}" | median)
    xargs_med=$(printf '%s\n' "${xargs_times[@]}" | median)
fi

awk -v t="$torc_med" -v x="$xargs_med" -v n="$JOBS" -v r="$RUNS" 'BEGIN {
    printf "%d no-op jobs, -j 2 / -P2, median of %d runs\n", n, r
    printf "  torc-ledger run : %8.3f s  (%.3f ms/job)\n", t, t * 1000 / n
    printf "  xargs -P2 bash  : %8.3f s  (%.3f ms/job)\n", x, x * 1000 / n
    printf "  runner overhead : %8.3f ms/job beyond the process spawn (target < 5 ms)\n", (t - x) * 1000 / n
}'
