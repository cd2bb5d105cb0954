#!/usr/bin/env bash
# Consumer throughput of kdeck next to kcat on the same topic of the real broker.
#
#   scripts/kafka start && benches/throughput.sh [RECORDS] [VALUE_BYTES]
#
# Produces RECORDS (default 1,000,000) keyed records of about VALUE_BYTES (default 250)
# over 6 partitions with kcat, then reads them all back with `kcat -C -e` and with
# `kdeck run --headless --stop-at-end` (a new group each run), printing records/s
# and peak memory (GNU time). Extra kdeck options can be passed in KDECK_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
SIZE=${2:-250}
BROKERS=127.0.0.1:${KAFKA_PORT:-9092}
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

cargo build --release -q
topic=bench-$(date +%s)
scripts/kafka topic "$topic" 6
echo "producing $N records of ~$SIZE bytes into $topic" >&2
awk -v n="$N" -v size="$SIZE" 'BEGIN { pad = sprintf("%*s", size - 60, ""); gsub(/ /, "x", pad);
  for (i = 0; i < n; i++) printf "key-%d\t{\"n\":%d,\"customer\":\"c-%04d\",\"pad\":\"%s\"}\n", i, i, i % 1000, pad }' |
  kcat -P -b "$BROKERS" -t "$topic" -K '\t' -X linger.ms=50 -X batch.num.messages=10000

measure() { # label, command...
  local label=$1; shift
  local out; out=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>>/tmp/kdeck-bench.stderr
  read -r secs kib <"$out"
  awk -v l="$label" -v n="$N" -v s="$secs" -v k="$kib" \
    'BEGIN { printf "%-28s %8.2f s  %10.0f records/s  peak RSS %6.1f MiB\n", l, s, n / s, k / 1024 }'
  rm -f "$out"
}

for round in 1 2 3; do
  measure "kcat -C -e (round $round)" kcat -C -b "$BROKERS" -t "$topic" -e -q -o beginning
  measure "kdeck run (round $round)" target/release/kdeck run --headless --stop-at-end -b "$BROKERS" \
    -G "bench-$topic-$round" -t "$topic" --log-file /tmp/kdeck-bench.log ${KDECK_ARGS:-}
done
