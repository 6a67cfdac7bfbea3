#!/usr/bin/env bash
# Study v2's long run (issue 25), in the background, resumable: rerunning this script continues where the
# storage stopped (a killed worker's running trials are trained again), on a fresh checkout from the last
# committed snapshot. Snapshots for commits:
#   testbed capability --preset v2 --snapshot --storage sqlite:///runs/capability-v2/studies.db
# which copies the live storage to results/capability-v2/studies.db and rebuilds the report from the copy.
# The live run reports into runs/capability-v2 (--out), so that results/ only ever holds a snapshot's report
# beside the storage copy it was built from.
set -u
cd "$(dirname "$0")/../.."
. .venv/bin/activate
mkdir -p runs/capability-v2
# A fresh checkout has no live storage (runs/ is not committed): continue from the last committed snapshot,
# which loses only what ran after it, and say so in restarts.txt.
if [ ! -f runs/capability-v2/studies.db ]; then
    cp results/capability-v2/studies.db runs/capability-v2/studies.db
    [ -f runs/capability-v2/restarts.txt ] || cp results/capability-v2/restarts.txt runs/capability-v2/
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'): no live storage; continued from the committed snapshot" \
        "(results/capability-v2/studies.db at $(git log -1 --format=%h -- results/capability-v2/studies.db))" \
        >> runs/capability-v2/restarts.txt
fi
exec testbed capability --preset v2 --storage sqlite:///runs/capability-v2/studies.db --out runs/capability-v2 \
    --workers 2 --quiet \
    >> runs/capability-v2/run.log 2>&1
