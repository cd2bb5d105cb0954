#!/usr/bin/env bash
# Does the dashboard slow the consumer? The same N records consumed headless and
# with the dashboard drawn in a 160x48 tmux terminal, alternating, 3 rounds each.
#
#   scripts/kafka start && benches/dashboard.sh
source "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || { apt-get update -qq && apt-get install -y -qq tmux >/dev/null; }
topic=$(make_topic)
for round in 1 2 3; do
  measure "headless (round $round)" "${KDECK[@]}" -G "b-headless-$topic-$round" -t "$topic"
  # The dashboard needs a terminal: run the same command inside tmux and time it there.
  out=$(mktemp)
  tmux -L kdeck-bench new-session -d -x 160 -y 48 \
    "/usr/bin/time -f '%e %M' -o $out.t ${KDECK[*]/--headless/} -G b-tui-$topic-$round -t $topic; mv $out.t $out"
  while [ ! -s "$out" ]; do sleep 0.2; done
  read -r secs kib <"$out"
  awk -v n="$N" -v s="$secs" -v k="$kib" -v r="$round" \
    'BEGIN { printf "%-40s %8.2f s  %10.0f records/s  peak RSS %6.1f MiB\n", "dashboard (round " r ")", s, n / s, k / 1024 }'
  rm -f "$out"
  tmux -L kdeck-bench kill-server 2>/dev/null || true
done
