#!/usr/bin/env bash
# Issue 20's GPU checks as one script for a lent CUDA machine (docs/performance.md, "GPU"):
#   1. the CUDA tests: `pytest -m cuda` over tests/cuda (fp32 parity with transformers, bf16
#      tokens against fp32's, the compiled decode step's tokens) and the bench's cuda test;
#   2. a short bench in bf16 (SDPA's CUDA kernels), with peak GPU memory;
#   3. the same with the compiled model beside plain and compiled transformers.
# Each part has its own time limit (8 minutes together, on an H200); the summary at the end says
# which passed, and the exit status is non-zero when any failed or ran out of time.
#
#   bash scripts/gpu_check.sh              # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --wheels     # here, first: the wheels a bare GPU machine lacks, into .whl/
#
# Python. A checkout whose .venv (make test) sees CUDA uses it. A bare lent machine has no network
# and gets a copy of the working tree without .venv (6 GB, over what can travel): there the
# script uses the machine's python3 (its PyTorch, Triton, transformers), this checkout's src/ on
# PYTHONPATH, and, from .whl/ when it is there (carry it), the packages that python3 lacks,
# installed into /tmp/site without the network. `--wheels` downloads them here, through pip's
# ordinary index, for the GPU machine's Python (3.12, x86-64): the versions this .venv has.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(open_clip_torch ftfy wcwidth av transformers)  # missing or too old in the GPU image

if [ "${1:-}" = "--wheels" ]; then
    [ -x .venv/bin/python ] || { echo "gpu_check.sh --wheels: no .venv here to take versions from; run make test first"; exit 2; }
    specs=()
    for name in "${WHEELS[@]}"; do
        version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
        [ -n "$version" ] || { echo "gpu_check.sh --wheels: $name is not installed in .venv; run make test first"; exit 2; }
        specs+=("$name==$version")
    done
    platforms=()
    for n in 17 27 28 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    mkdir -p .whl && .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "${specs[@]}" || exit 1
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo "add '/.whl/' to .git/info/exclude so git leaves it out"
    echo "wheels in .whl/ ($(du -sh .whl | cut -f1)); carry .whl to the GPU machine"
    exit 0
fi

LOG=${OUT:-/tmp/gpu_check}  # the device tool brings back what is under $OUT
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1

PY=python3
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    PY=.venv/bin/python
else
    if compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || { echo "gpu_check.sh: installing .whl/ into /tmp/site failed (above)"; exit 1; }
        export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! $PY -c "import torch, transformers, open_clip, av, git_scratch; assert torch.cuda.is_available(), 'no CUDA device'" \
        2>"$LOG/env.txt"; then
    echo "gpu_check.sh: $PY cannot run the checks: $(tail -1 "$LOG/env.txt"); on a bare GPU machine run" \
         "'bash scripts/gpu_check.sh --wheels' here first and carry .whl"
    exit 1
fi
$PY -c "import torch, transformers; print(f'{torch.cuda.get_device_name()}: torch {torch.__version__}, transformers {transformers.__version__}')"

declare -A STATUS
step() {  # step NAME SECONDS COMMAND...: run it with a limit, its output also in $LOG/NAME.txt
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$LOG/$name.txt"
    local rc=${PIPESTATUS[0]}
    case $rc in
        0) STATUS[$name]="passed" ;;
        124) STATUS[$name]="TIMED OUT after ${limit}s" ;;
        *) STATUS[$name]="FAILED (exit $rc)" ;;
    esac
    STATUS[$name]+=" in $((SECONDS - start))s"
}

step cuda_tests 210 $PY -m pytest -q -p no:cacheprovider -m cuda tests/cuda tests/scripts/test_bench.py
step bench_bf16 120 $PY scripts/bench.py --device cuda --dtype bf16 --shapes base --cases caption,decode_step \
    --repeats 3 --json "$LOG/bench_bf16.json"
step bench_compiled 150 $PY scripts/bench.py --device cuda --dtype bf16 --compile --theirs plain,compile --shapes base \
    --cases caption,decode_step --repeats 3 --no-memory --json "$LOG/bench_compiled.json"

echo "== summary"
failed=0
for name in cuda_tests bench_bf16 bench_compiled; do
    echo "$name: ${STATUS[$name]}"
    [[ ${STATUS[$name]} == passed* ]] || failed=1
done
grep -h "passed\|failed\|skipped" "$LOG/cuda_tests.txt" | tail -1
grep -h "^| base" "$LOG/bench_bf16.txt" "$LOG/bench_compiled.txt" | sort -u
exit $failed
