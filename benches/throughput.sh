#!/usr/bin/env bash
# Consumer throughput of kdeck next to kcat on the same topic of the real broker.
#
#   scripts/kafka start && benches/throughput.sh
#
# N (default 1,000,000) keyed records of about SIZE (default 250) bytes over 6
# partitions, read back with `kcat -C -e` and with `kdeck run --headless
# --stop-at-end` (null sink, a new group each run): records/s and peak memory.
source "$(dirname "$0")/lib.sh"
topic=$(make_topic)
for round in 1 2 3; do
  measure "kcat -C -e (round $round)" kcat -C -b "$BROKERS" -t "$topic" -e -q -o beginning
  measure "kdeck run (round $round)" "${KDECK[@]}" -G "bench-$topic-$round" -t "$topic"
done
