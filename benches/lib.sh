# Shared by the bench scripts: build, make a topic of N JSON records, time commands.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
SIZE=${SIZE:-250}
BROKERS=127.0.0.1:${KAFKA_PORT:-9092}
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release -q

# make_topic: prints the name of a new 6-partition topic holding N keyed JSON
# records of about SIZE bytes (valid against assets/schemas/bench.schema.json).
make_topic() {
  local topic=bench-$(date +%s%N)
  scripts/kafka topic "$topic" 6 >/dev/null 2>&1
  echo "producing $N records of ~$SIZE bytes into $topic" >&2
  awk -v n="$N" -v size="$SIZE" 'BEGIN { pad = sprintf("%*s", size - 60, ""); gsub(/ /, "x", pad);
    for (i = 0; i < n; i++) printf "key-%d\t{\"n\":%d,\"customer\":\"c-%04d\",\"pad\":\"%s\"}\n", i, i, i % 1000, pad }' |
    kcat -P -b "$BROKERS" -t "$topic" -K '\t' -X linger.ms=50 -X batch.num.messages=10000
  echo "$topic"
}

# measure LABEL COMMAND...: wall time, records/s and peak RSS of one run.
measure() {
  local label=$1; shift
  local out; out=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>>/tmp/kdeck-bench.stderr
  read -r secs kib <"$out"
  awk -v l="$label" -v n="$N" -v s="$secs" -v k="$kib" \
    'BEGIN { printf "%-40s %8.2f s  %10.0f records/s  peak RSS %6.1f MiB\n", l, s, n / s, k / 1024 }'
  rm -f "$out"
}

# `"${KDECK[@]}" -G GROUP -t TOPIC [OPTIONS...]` consumes TOPIC to its end under GROUP.
KDECK=(target/release/kdeck run --headless --stop-at-end -b "$BROKERS"
  --log-file /tmp/kdeck-bench.log --audit /tmp/kdeck-bench-audit.sqlite)
