#!/usr/bin/env bash
# Scenarios c and d with 16 worker processes on the 16-core device machine
# (Python 3.12, no internet), trioclust and dask.distributed in the same run,
# then a py-spy profile of trioclust's scenario c there, in one go:
#   1. install the carried wheels (.whl16/: dask, distributed and the trioclust
#      dependencies that image lacks, pure Python, plus py-spy) into /tmp/site;
#   2. benchmarks/run.py --workers 16 --only cd (full sizes);
#   3. benchmarks/profile_trioclust.py --scenario c --workers 16 (skipped with NO_PROFILE=1);
#   4. with BREAKDOWN=1, benchmarks/scheduler_breakdown.py --workers 16 (the exact split of
#      the scheduler's CPU per task by layer; ~20 s).
# Everything it prints also goes to $OUT (device.log, bench16.json, profile16.txt, breakdown16.txt).
#
# Make .whl16 here first (ignored by git; see the device README):
#   mkdir -p .whl16 && cp .whl/{anyio,cloudpickle,dask-2026,distributed,locket,outcome,partd,\
#   sniffio,tblib,tornado,trio-0,zict,wsproto}*.whl .whl16/   # or pip download them
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 -d .whl16 py-spy
# then, from the repository root:
#   run(command="bash benchmarks/device_bench16.sh", carry=[".whl16"], timeout_s=540)
# NO_DASK=1 runs trioclust's side only (a shorter look, e.g. before and after a change).
# Locally, for a dry run: PY=.venv-bench/bin/python SKIP_INSTALL=1 QUICK=1 OUT=/tmp/out WORKERS=2 \
#   bash benchmarks/device_bench16.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-bench16-out}
mkdir -p "$OUT"
PY=${PY:-python3}
WORKERS=${WORKERS:-16}
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $* ($(date +%T))"; }

main() {
status=0

step "machine"
nproc
"$PY" --version

if [ -z "${SKIP_INSTALL:-}" ]; then
    step "install the carried wheels"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl16/*.whl || return 2
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    export PATH=/tmp/site/bin:$PATH
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

step "c and d, $WORKERS workers, trioclust and dask"
timeout 360 "$PY" benchmarks/run.py ${QUICK:+--quick} ${NO_DASK:+--no-dask} --workers "$WORKERS" --only cd \
    --json "$OUT/bench16.json" || status=1

if [ -z "${NO_PROFILE:-}" ]; then
    step "profile of trioclust's c, $WORKERS workers"
    timeout 120 "$PY" benchmarks/profile_trioclust.py --scenario c --workers "$WORKERS" \
        > "$OUT/profile16.txt" 2>&1 || status=1
    head -c 6000 "$OUT/profile16.txt"
fi

if [ -n "${BREAKDOWN:-}" ]; then
    step "the scheduler's CPU per task by layer, $WORKERS workers"
    timeout 120 "$PY" benchmarks/scheduler_breakdown.py --workers "$WORKERS" 2>&1 \
        | tee "$OUT/breakdown16.txt" || status=1
fi

step "done, status $status"
return $status
}

main 2>&1 | tee "$OUT/device.log"
exit "${PIPESTATUS[0]}"
