#!/usr/bin/env bash
# Protocol v2's pilot: testbed tune (default protocol v2) on parity and on a 2-pair MQAR, GateLoop against
# RetNet (same K×V state and heads, fixed transition), 2 workers (two processes of the same command).
set -u
cd "$(dirname "$0")/../.."
. .venv/bin/activate
DB=sqlite:///runs/pilot-v2/studies.db
for task in state_tracking mqar; do
  cmd=(testbed tune --task "$task" --models gateloop,retnet --preset pilot_v2 --study-prefix pilot-v2 --storage "$DB" --final-seeds 5 --quiet)
  "${cmd[@]}" > "runs/pilot-v2/$task-w1.log" 2>&1 &
  sleep 5
  "${cmd[@]}" > "runs/pilot-v2/$task-w2.log" 2>&1
  wait
done
echo done > runs/pilot-v2/DONE
