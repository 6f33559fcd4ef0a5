#!/usr/bin/env bash
# `make test-under-load`: the whole suite on a clean clone of HEAD while two CPU hogs run, RUNS times.
# Each run clones afresh (so it installs .venv as a newcomer would, from the shared wheel cache) and prints
# its result and wall time; the hogs are stopped however the runs end. Exits non-zero if any run failed.
set -uo pipefail

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
runs=${RUNS:-1}
python=${PYTHON:-python3}
work=$(mktemp -d)
hogs=()

stop() {
	kill "${hogs[@]}" 2>/dev/null
	wait "${hogs[@]}" 2>/dev/null
	rm -rf "$work"
}
trap stop EXIT

for _ in 1 2; do
	"$python" -c 'while True: pass' &
	hogs+=($!)
done
echo "under load: CPU hogs ${hogs[*]} on $(nproc) cores; $runs run(s) of make test on clean clones of $(git -C "$repo" rev-parse --short HEAD)"

failed=0
for run in $(seq 1 "$runs"); do
	clone="$work/run-$run"
	git clone --quiet "$repo" "$clone"
	started=$(date +%s)
	if make -C "$clone" test >"$work/run-$run.log" 2>&1; then result=passed; else result=FAILED; failed=1; fi
	seconds=$(($(date +%s) - started))
	tests=$(grep -E '^=+ .*(passed|failed).* in ' "$work/run-$run.log" | tail -1)
	echo "run $run: $result in ${seconds}s: $tests"
	if [ "$result" = FAILED ]; then
		cp "$work/run-$run.log" "$repo/.test-under-load-run-$run.log"
		echo "  log kept in .test-under-load-run-$run.log"
	fi
	rm -rf "$clone"
done
exit "$failed"
