#!/usr/bin/env bash
# Study v2's budget pilot (issue 25): induction heads and S3 at the study's configs, two processes (one per
# core), resumable (pilot.py skips runs already in its output). From the repository root.
set -u
cd "$(dirname "$0")/../.."
. .venv/bin/activate
OUT=runs/pilot-v2-budgets
mkdir -p "$OUT"
pilot() { python results/pilot-v2-budgets/pilot.py "$@"; }
for shard in 0/2 1/2; do
  ( pilot $OUT/ih.jsonl induction_heads gateloop_kv,attention,gateloop_kv_real,mamba_d16 0.00316 6000 --shard=$shard
    pilot $OUT/s3.jsonl s3 gateloop_kv,attention 0.00316,0.01 8000 --shard=$shard ) > "$OUT/shard-${shard%/*}.log" 2>&1 &
done
wait
