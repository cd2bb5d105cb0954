#!/usr/bin/env bash
# What the pipeline costs: the same N records consumed with the null sink, with
# JSON decoding and JSON Schema validation, and with validation plus the SQLite sink.
#
#   scripts/kafka start && benches/pipeline.sh
source "$(dirname "$0")/lib.sh"
topic=$(make_topic)
schema=assets/schemas/bench.schema.json
for round in 1 2; do
  db=$(mktemp -u /tmp/kdeck-bench-XXXX.sqlite)
  measure "null sink, bytes (round $round)" "${KDECK[@]}" -G "b-null-$topic-$round" -t "$topic"
  measure "json + schema, null sink (round $round)" "${KDECK[@]}" -G "b-schema-$topic-$round" -t "$topic" --format json --schema "$schema"
  measure "json + schema, sqlite sink (round $round)" "${KDECK[@]}" -G "b-sqlite-$topic-$round" -t "$topic" --format json --schema "$schema" --sink "sqlite:$db"
  rm -f "$db" "$db-wal" "$db-shm"
done
