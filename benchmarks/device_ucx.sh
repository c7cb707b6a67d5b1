#!/usr/bin/env bash
# The ucx:// checks on the GPU machine (Python 3.12, CUDA 13, no internet), in one go:
#   1. install the carried wheels (.whl/: ucxx-cu13 and its libraries, plus the
#      trioclust dependencies that image lacks) into /tmp/site;
#   2. pytest tests/test_transport_ucx.py, with UCX free to use every transport
#      (UCX_TLS=all), which includes the CuPy test that the CPU machines skip;
#   3. the 200 MB worker-to-worker transfer, ucx then tcp, NumPy then CuPy.
# Everything it prints also goes to $OUT (device.log, pytest.xml, transfer-*.json).
#
# Run from the repository root, carrying .whl (see the device README), e.g.
#   run(command="bash benchmarks/device_ucx.sh", carry=[".whl"], timeout_s=540)
# Locally, for a dry run of steps 2 and 3: PY=.venv/bin/python SKIP_INSTALL=1 OUT=/tmp/out bash benchmarks/device_ucx.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-ucx-out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $* ($(date +%T))"; }

main() {
status=0

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" --version

if [ -z "${SKIP_INSTALL:-}" ]; then
    step "install the carried wheels"
    wheels=()
    for name in ucxx_cu13 libucxx_cu13 libucx_cu13 rmm_cu13 librmm_cu13 rapids_logger \
                anyio trio outcome sniffio tblib wsproto pytest_trio; do
        found=(.whl/"$name"-*.whl)
        if [ ! -e "${found[0]}" ]; then echo "missing wheel: $name"; return 2; fi
        wheels+=("${found[0]}")
    done
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${wheels[@]}" || return 2
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

step "versions"
"$PY" - <<'EOF'
import importlib.metadata as md
for name in ["ucxx-cu13", "ucxx-cu12", "libucx-cu13", "rmm-cu13", "cuda-core", "cuda-bindings",
             "cupy-cuda13x", "numpy", "anyio", "trio", "pytest"]:
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
import ucxx
print("ucx", ucxx.get_ucx_version())
EOF

step "pytest tests/test_transport_ucx.py (UCX_TLS=all)"
UCX_TLS=all timeout 240 "$PY" -m pytest tests/test_transport_ucx.py -v -rs --durations=5 \
    -p no:cacheprovider --junitxml="$OUT/pytest.xml" || status=1

step "200 MB worker to worker, NumPy, ucx then tcp (UCX_TLS=all)"
UCX_TLS=all timeout 120 "$PY" benchmarks/scenarios_ucx.py --schemes ucx,tcp --array numpy \
    --json "$OUT/transfer-numpy.json" || status=1

step "200 MB worker to worker, CuPy, ucx then tcp (UCX_TLS=all)"
UCX_TLS=all timeout 120 "$PY" benchmarks/scenarios_ucx.py --schemes ucx,tcp --array cupy \
    --json "$OUT/transfer-cupy.json" || status=1

step "done, status $status"
return $status
}

main 2>&1 | tee "$OUT/device.log"
exit "${PIPESTATUS[0]}"
