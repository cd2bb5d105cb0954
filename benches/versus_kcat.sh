#!/usr/bin/env bash
# The whole pipeline against kcat, in one run on one topic: each kdeck row is
# timed beside `kcat -C -e -q -o beginning` reading the same records, and
# printed as a ratio to it (wall and CPU), with records/s, CPU µs per record
# and peak RSS. Medians of ROUNDS alternating runs (default 3).
#
#   scripts/kafka start && benches/versus_kcat.sh            # N=1000000 by default
#   ROWS="null json-sqlite" benches/versus_kcat.sh           # some rows only
#   scripts/postgres start && PGPASSWORD=$(cat /tmp/kdeck-pg-5433/password) \
#     ROWS="json-postgres eos-postgres" benches/versus_kcat.sh  # PostgreSQL rows (PG_URL to change)
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
ROWS=${ROWS:-"null json-sqlite eos-sqlite kafka-alo kafka-eos exec exec-batch"}
# The exec rows' child answers ok to each line. (Not a shell `read` loop: on a
# pipe, bash reads a byte per system call, 99 s of its own for 1M records.)
child="python3 -u -c 'import sys
for line in sys.stdin: sys.stdout.write(\"ok\\n\"); sys.stdout.flush()'"
topic=$(make_topic)
schema=assets/schemas/bench.schema.json
upsert="INSERT INTO totals(customer, n) VALUES(:customer, 1) ON CONFLICT(customer) DO UPDATE SET n = n + 1"
pg_upsert="INSERT INTO totals(customer, n) VALUES(:customer, 1) ON CONFLICT(customer) DO UPDATE SET n = totals.n + 1"
PG_URL=${PG_URL:-postgres://kdeck@127.0.0.1:5433/kdeck}

# run_once CMD...: "wall cpu rss_kib" of one run.
run_once() {
  local out; out=$(mktemp)
  /usr/bin/time -f "%e %U %S %M" -o "$out" "$@" >/dev/null 2>>/tmp/kdeck-bench.stderr
  awk '{ printf "%s %.3f %s\n", $1, $2 + $3, $4 }' "$out"
  rm -f "$out"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# prepare ROW ROUND: fresh state for one run; prints the kdeck command line.
command_for() {
  local row=$1 round=$2 group="b-$1-$2-$topic"
  local db=/tmp/kdeck-bench-$row.sqlite
  rm -f "$db" "$db-wal" "$db-shm"
  case $row in
    null) echo "${KDECK[*]} -G $group -t $topic" ;;
    json-sqlite) echo "${KDECK[*]} -G $group -t $topic --format json --schema $schema --sink sqlite:$db" ;;
    eos-sqlite)
      python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute(sys.argv[2])" "$db" \
        "CREATE TABLE totals (customer TEXT PRIMARY KEY, n INTEGER)"
      echo "${KDECK[*]} -G $group -t $topic --format json --commit eos --sink sqlite:$db --sql @UPSERT@" ;;
    kafka-alo|kafka-eos)
      local out="$topic.$row.$round"
      scripts/kafka topic "$out" 6 >/dev/null 2>&1
      local commit=batch:1000; [ "$row" = kafka-eos ] && commit=eos
      echo "${KDECK[*]} -G $group -t $topic --format json --commit $commit --sink kafka:$out" ;;
    json-postgres)
      PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL" -qc "DROP TABLE IF EXISTS \"$topic\"" >/dev/null
      echo "${KDECK[*]} -G $group -t $topic --format json --schema $schema --sink $PG_URL" ;;
    eos-postgres)
      PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL" -qc "DROP TABLE IF EXISTS totals; CREATE TABLE totals (customer TEXT PRIMARY KEY, n BIGINT)" >/dev/null
      echo "${KDECK[*]} -G $group -t $topic --format json --commit eos --sink $PG_URL --sql @PGUPSERT@" ;;
    exec) echo "${KDECK[*]} -G $group -t $topic --sink exec:@EXEC@" ;;
    exec-batch) echo "${KDECK[*]} -G $group -t $topic --sink exec:@EXEC@ --exec-batch 256" ;;
  esac
}

printf '%-12s %9s %11s %10s %9s %9s %9s\n' row wall records/s "cpu µs/rec" "wall/kcat" "cpu/kcat" "rss MiB"
for row in $ROWS; do
  : >/tmp/kdeck-bench-rows
  for round in $(seq "$ROUNDS"); do
    read -r kw kc _ < <(run_once kcat -C -b "$BROKERS" -t "$topic" -e -q -o beginning)
    cmd=$(command_for "$row" "$round")
    # The two arguments with spaces go in as single words.
    read -ra words <<<"$cmd"
    for i in "${!words[@]}"; do
      [ "${words[$i]}" = @UPSERT@ ] && words[$i]=$upsert
      [ "${words[$i]}" = @PGUPSERT@ ] && words[$i]=$pg_upsert
      [ "${words[$i]}" = exec:@EXEC@ ] && words[$i]="exec:$child"
    done
    read -r w c rss < <(run_once "${words[@]}")
    echo "$w $c $rss $kw $kc" >>/tmp/kdeck-bench-rows
  done
  w=$(awk '{print $1}' /tmp/kdeck-bench-rows | median); c=$(awk '{print $2}' /tmp/kdeck-bench-rows | median)
  rss=$(awk '{print $3}' /tmp/kdeck-bench-rows | median)
  rw=$(awk '{print $1 / $4}' /tmp/kdeck-bench-rows | median); rc=$(awk '{print $2 / ($5 > 0 ? $5 : 0.001)}' /tmp/kdeck-bench-rows | median)
  awk -v r="$row" -v w="$w" -v c="$c" -v n="$N" -v rw="$rw" -v rc="$rc" -v m="$rss" \
    'BEGIN { printf "%-12s %8.2fs %11.0f %10.2f %9.2f %9.2f %9.1f\n", r, w, n / w, c * 1e6 / n, rw, rc, m / 1024 }'
done
