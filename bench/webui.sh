#!/usr/bin/env bash
# Benchmark the web UI and its API (issue 6) with the real-browser and API
# tests: first load of the pocket's and the agent's pages in Debian's headless
# Chromium at 360x740 (bytes on the wire, time to ready), progress events
# during a sync (rate, largest gap), and what 16 more open event streams (one
# per open page) cost the pocket in resident memory.
#
# usage: bench/webui.sh        (BENCH_RUNS=3 repetitions, median reported)
#
# The tests write their figures to CRPE_FIGURES; the goals are checked here,
# not in the tests. Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$REPO_ROOT/bench/lib.sh"
bench_init crpe-bench-webui 600
RUNS="${BENCH_RUNS:-3}"
require_x /usr/bin/chromium "apt-get install chromium"
note_load

for r in $(seq 1 "$RUNS"); do
  log "run $r"
  ( cd "$REPO_ROOT" && CRPE_FIGURES="$TMP/figures.$r" timeout 300 go test -count=1 \
      -run 'TestPocketUI$|TestAgentUI$|TestSyncDownloadSend$|TestEventStreamsCost$' \
      ./test/webui/ ./test/pocketapi/ >"$TMP/test.$r.log" 2>&1 ) \
    || { tail -30 "$TMP/test.$r.log" >&2; die "the tests failed in run $r"; }
done

# val NAME: the median of NAME over the runs
# shellcheck disable=SC2046 # one value per word
val() { median $(cat "$TMP"/figures.* | awk -v n="$1" '$1 == n {print $2}'); }
row() { # label value unit goal-expr goal-text
  local v; v=$(val "$2")
  local ok="❌"; awk -v v="$v" "BEGIN{exit !($4)}" && ok="✅"
  echo "| $1 | $(fmt "$v" 0) $3 | $5 | $ok |"
}

echo "<!-- bench/webui.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), $(/usr/bin/chromium --version 2>/dev/null | head -1) -->"
echo "Median of $RUNS runs of the tests, on loopback; headless Chromium at 360x740."
echo
echo "| metric | crpe | goal | met |"
echo "|---|---:|---|:-:|"
row "pocket page, first load: bytes transferred (gzip)" pocket_first_load_bytes B 'v < 300*1024' "< 300 KB"
row "pocket page, first load: navigation → ready (data shown, controls live)" pocket_first_load_ms ms 'v < 1000' "< 1 s"
row "agent page, first load: bytes transferred (gzip)" agent_first_load_bytes B 'v < 300*1024' "< 300 KB"
row "agent page, first load: navigation → ready" agent_first_load_ms ms 'v < 1000' "< 1 s"
row "progress events during a sync (per second)" sync_events_per_second /s 'v >= 2' "≥ 2 /s"
row "largest gap between progress events during a sync" sync_events_max_gap_ms ms 'v <= 500' "(≤ 500 ms)"
row "pocket RSS: 16 more open event streams (one per open page)" rss_16_streams_delta_kib KiB 'v < 5*1024' "< 5 MiB"
