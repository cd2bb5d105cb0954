#!/usr/bin/env bash
# What exactly-once costs: the same N records aggregated into SQLite with an
# upsert (--sql) and copied Kafka to Kafka, each with batch:1000 and with eos.
#
#   scripts/kafka start && benches/eos.sh
source "$(dirname "$0")/lib.sh"
topic=$(make_topic)
upsert="INSERT INTO totals(customer, n) VALUES(:customer, 1) ON CONFLICT(customer) DO UPDATE SET n = n + 1"
for commit in batch:1000 eos; do
  db=$(mktemp -u /tmp/kdeck-bench-XXXX.sqlite)
  sqlite3_init="CREATE TABLE totals (customer TEXT PRIMARY KEY, n INTEGER)"
  python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute(sys.argv[2])" "$db" "$sqlite3_init"
  measure "sqlite upsert, $commit" "${KDECK[@]}" -G "b-sql-$commit-$topic" -t "$topic" --format json --commit "$commit" \
    --sink "sqlite:$db" --sql "$upsert"
  rm -f "$db" "$db-wal" "$db-shm"
  out="$topic.out-${commit%%:*}"
  scripts/kafka topic "$out" 6 >/dev/null 2>&1
  measure "kafka to kafka, $commit" "${KDECK[@]}" -G "b-k2k-$commit-$topic" -t "$topic" --format json --commit "$commit" \
    --sink "kafka:$out"
done
