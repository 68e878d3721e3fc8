#!/usr/bin/env bash
# How crpe's cost grows with the archive (issue 16, item 5, second
# dimension): archives of 1, 4 and 16 GiB, half in one big layer and half in
# 4 MiB layers, exported, imported with --data and --to an agent, and each
# import resumed after a cut at half. Not part of the test suite: generated
# data, loopback only, bounded.
#
# usage: bench/scale-archive.sh [path-to-crpe-binary]
#
#   BENCH_SCALE_GIB="1 4 16"          archive sizes (GiB of layers)
#   BENCH_MAX_SECONDS=2400            hard wall-clock cap for the whole script
#   BENCH_PLOT=docs/scale-archive.svg where the plot goes ("" for none)
#
# Disk: a size of S GiB needs about 2·S GiB free in /tmp at once (the
# pushed images and the archive, then the archive and one store); a size
# that does not fit is refused before anything is written.
#
# For each size S: a fresh crpe agent (--allow-push) receives library/big:1
# (one random layer of S/2 GiB) and library/small-NNN:1 (32 random 4 MiB
# layers each, S/2 GiB in all) from `imagefix big`, streamed as generated.
# Then, each under `imagefix watch` (peak total RSS, peak RssAnon) with
# `sync` before it:
#   export        crpe export --offline of the package from that agent's data
#                 folder (warm: no upstream; a registry and the export's
#                 cache would need a third copy of the blobs on this disk),
#                 which is then removed
#   floor         openssl dgst -sha256 of the archive (hash) and cp + sync -f
#                 (write): the import floor is the slower of the two
#   data          crpe import --data into a fresh folder; its disk use
#   data-resume   crpe import --data killed (SIGKILL) at half of data's
#                 time, then run again: the rerun's time and the bytes it
#                 found already stored (what the cut kept)
#   agent         crpe import --to a fresh crpe agent, and the agent's peak
#                 RSS (imagefix sample)
#   agent-resume  the client of an import --to a fresh agent killed at half
#                 of agent's time (the connection cut), then run again
#                 (delta: only the blobs the agent lacks are sent)
# It prints a table (time, s per GiB, ratio to the floor, peak RSS, disk),
# the growth between sizes (time ratio over size ratio: 1.00 is linear),
# the data as TSV, and with BENCH_PLOT an SVG of seconds per GiB against
# the size (bench/plot.py).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES="${BENCH_SCALE_GIB:-1 4 16}"
PLOT="${BENCH_PLOT-docs/scale-archive.svg}"
PLATFORM=linux/amd64

AGENT_PID="" SAMPLERS="" BG_PID=""
on_exit() {
  local p
  for p in $SAMPLERS $BG_PID $AGENT_PID; do stop_pid "$p"; done
}
bench_init crpe-bench-scale-archive "${BENCH_MAX_SECONDS:-2400}"
require_cmd curl go python3 openssl
note_load
build_fix imagefix
build_crpe "$@"
crpe_has_flags export --data --platform --offline --json
crpe_has_flags agent --allow-push --data --token-file
crpe_has_flags import --to --token --full --data --json

TOKEN="$(rand_hex 24)"
printf '%s\n' "$TOKEN" >"$TMP/token"; chmod 600 "$TMP/token"
TSV="$TMP/scale-archive.tsv"
printf 'gib\tstep\tseconds\ts_per_gib\tfloor_ratio\tpeak_rss_mib\trss_anon_mib\tdisk_mib\tkept_mib\n' >"$TSV"

FLOOR_S=0
row() { # gib step seconds rss anon disk_bytes kept_bytes
  awk -v g="$1" -v s="$2" -v t="$3" -v r="$4" -v a="$5" -v d="$6" -v k="$7" -v f="$FLOOR_S" \
    'BEGIN{printf "%d\t%s\t%.3f\t%.3f\t%s\t%.1f\t%.1f\t%.1f\t%.1f\n", g, s, t, t/g, (f>0 && s!="floor-hash" && s!="floor-write")?sprintf("%.2f", t/f):"", r, a, d/1048576, k/1048576}' >>"$TSV"
}
# json_num FILE KEY: the first number under KEY in crpe's --json output
json_num() { python3 -c 'import json,sys
def find(o,k):
    if isinstance(o,dict):
        if k in o: return o[k]
        for v in o.values():
            r=find(v,k)
            if r is not None: return r
    if isinstance(o,list):
        for v in o:
            r=find(v,k)
            if r is not None: return r
print(find(json.load(open(sys.argv[1])),sys.argv[2]) or 0)' "$1" "$2"; }

start_agent() { # dir [args...] -> AGENT_PID, AGENT_URL
  local port d=$1; shift; port=$(free_port); AGENT_URL="http://$HOST:$port"
  "$CRPE_BIN" agent --addr "$HOST:$port" --data "$d" --token-file "$TMP/token" --log-format json "$@" >"$d.log" 2>&1 &
  AGENT_PID=$!
  wait_http "$AGENT_URL/healthz" 30 || { tail -20 "$d.log" >&2; die "crpe agent did not start"; }
}

# cut_at SECONDS CMD...: runs CMD in the background and kills it (SIGKILL)
# after SECONDS, unless it ended first; returns 0 when it was cut
cut_at() {
  local s=$1; shift
  "$@" >/dev/null 2>&1 &
  BG_PID=$!
  sleep "$s"
  if kill -0 "$BG_PID" 2>/dev/null; then
    kill -KILL "$BG_PID" 2>/dev/null || true
    wait "$BG_PID" 2>/dev/null || true
    BG_PID=""
    return 0
  fi
  wait "$BG_PID" 2>/dev/null || true
  BG_PID=""
  return 1
}

for g in $SIZES; do
  dir="$TMP/g$g"
  mkdir -p "$dir"
  need=$(( (2 * g + 2) * 1024 * 1024 ))
  free=$(df -Pk "$TMP" | awk 'NR==2{print $4}')
  [ "$free" -gt "$need" ] || die "size $g GiB needs $((need / 1048576)) GiB free in $TMP, $((free / 1048576)) GiB are"
  # the images are pushed into a crpe agent, whose data folder the export
  # then reads offline: one copy of the blobs besides the archive (a
  # registry and the export's cache would be two)
  start_agent "$dir/source" --allow-push
  log "S=$g GiB: pushing library/big:1 and the small images (streamed)"
  timeout 1800 "$TMP/imagefix" big -registry "$AGENT_URL" -token "$TOKEN" -repo-prefix docker.io/ -pkg "$dir/pkg.json" \
    -mib $((g * 1024)) -timeout 1790s >"$dir/big.json" || die "imagefix big -mib $((g * 1024)) failed"
  stop_pid "$AGENT_PID"; AGENT_PID=""
  log "S=$g GiB: pushed $(cat "$dir/big.json")"
  archive="$dir/scale.kubepkg.tgz"

  FLOOR_S=0
  settle; t0=$(now)
  tw "$dir/export-mem.json" 1800 "$CRPE_BIN" export -f "$dir/pkg.json" -o "$archive" --data "$dir/source" --offline \
    --platform "$PLATFORM" --json >"$dir/export.json" 2>"$dir/export.err" \
    || { tail -20 "$dir/export.err" >&2; die "export S=$g failed"; }
  t1=$(now); bytes=$(stat -c %s "$archive")
  row "$g" export "$(elapsed "$t0" "$t1")" "$(jmib "$dir/export-mem.json" peak_rss_kib)" "$(jmib "$dir/export-mem.json" rss_anon_kib)" "$bytes" 0
  rm -rf "$dir/source" "$dir/source.log"

  settle; t0=$(now); timeout 600 openssl dgst -sha256 "$archive" >/dev/null; t1=$(now); fh=$(elapsed "$t0" "$t1")
  settle; t0=$(now); timeout 900 cp "$archive" "$dir/copy"; timeout 900 sync -f "$dir/copy"; t1=$(now); fw=$(elapsed "$t0" "$t1")
  rm -f "$dir/copy"
  row "$g" floor-hash "$fh" 0 0 0 0
  row "$g" floor-write "$fw" 0 0 "$bytes" 0
  FLOOR_S=$(awk -v a="$fh" -v b="$fw" 'BEGIN{print (a>b)?a:b}')
  log "S=$g GiB: archive $(mib "$bytes") MiB; floors: hash $fh s, write+sync $fw s"

  settle; t0=$(now)
  tw "$dir/data-mem.json" 1200 "$CRPE_BIN" import "$archive" --data "$dir/data" --json >"$dir/data.json" 2>"$dir/data.err" \
    || { tail -20 "$dir/data.err" >&2; die "import --data S=$g failed"; }
  t1=$(now); tdata=$(elapsed "$t0" "$t1")
  row "$g" data "$tdata" "$(jmib "$dir/data-mem.json" peak_rss_kib)" "$(jmib "$dir/data-mem.json" rss_anon_kib)" "$(du -sb "$dir/data" | cut -f1)" 0
  rm -rf "$dir/data"

  half=$(awk -v t="$tdata" 'BEGIN{printf "%.2f", t/2}')
  settle
  cut_at "$half" "$CRPE_BIN" import "$archive" --data "$dir/data" --json || log "S=$g GiB: import --data ended before the cut at $half s"
  settle; t0=$(now)
  tw "$dir/data2-mem.json" 1200 "$CRPE_BIN" import "$archive" --data "$dir/data" --json >"$dir/data2.json" 2>"$dir/data2.err" \
    || { tail -20 "$dir/data2.err" >&2; die "import --data (resume) S=$g failed"; }
  t1=$(now)
  row "$g" data-resume "$(elapsed "$t0" "$t1")" "$(jmib "$dir/data2-mem.json" peak_rss_kib)" "$(jmib "$dir/data2-mem.json" rss_anon_kib)" \
    "$(du -sb "$dir/data" | cut -f1)" "$(json_num "$dir/data2.json" bytesPresent)"
  rm -rf "$dir/data"

  start_agent "$dir/agent"
  sample_start "$AGENT_PID" "$dir/agent-mem.json"; sp=$SAMPLER_PID; SAMPLERS=$sp
  settle; t0=$(now)
  tw "$dir/client-mem.json" 1200 "$CRPE_BIN" import "$archive" --to "$AGENT_URL" --token "$TOKEN" --full --json >"$dir/agent.json" 2>"$dir/agent.err" \
    || { tail -20 "$dir/agent.err" "$dir/agent.log" >&2; die "import --to S=$g failed"; }
  t1=$(now); tagent=$(elapsed "$t0" "$t1")
  sample_stop "$sp"; SAMPLERS=""
  stop_pid "$AGENT_PID"; AGENT_PID=""
  row "$g" agent "$tagent" "$(jmib "$dir/agent-mem.json" peak_rss_kib)" "$(jmib "$dir/agent-mem.json" rss_anon_kib)" "$(du -sb "$dir/agent" | cut -f1)" 0
  log "S=$g GiB: import --to client peak RSS $(jmib "$dir/client-mem.json" peak_rss_kib) MiB"
  rm -rf "$dir/agent" "$dir/agent.log"

  start_agent "$dir/agent"
  half=$(awk -v t="$tagent" 'BEGIN{printf "%.2f", t/2}')
  settle
  cut_at "$half" "$CRPE_BIN" import "$archive" --to "$AGENT_URL" --token "$TOKEN" --json || log "S=$g GiB: import --to ended before the cut at $half s"
  sleep 1 # the agent sees the connection end, publishes what it verified
  sample_start "$AGENT_PID" "$dir/agent2-mem.json"; sp=$SAMPLER_PID; SAMPLERS=$sp
  settle; t0=$(now)
  timeout 1200 "$CRPE_BIN" import "$archive" --to "$AGENT_URL" --token "$TOKEN" --json >"$dir/agent2.json" 2>"$dir/agent2.err" \
    || { tail -20 "$dir/agent2.err" "$dir/agent.log" >&2; die "import --to (resume) S=$g failed"; }
  t1=$(now)
  sample_stop "$sp"; SAMPLERS=""
  stop_pid "$AGENT_PID"; AGENT_PID=""
  row "$g" agent-resume "$(elapsed "$t0" "$t1")" "$(jmib "$dir/agent2-mem.json" peak_rss_kib)" "$(jmib "$dir/agent2-mem.json" rss_anon_kib)" \
    "$(du -sb "$dir/agent" | cut -f1)" "$(json_num "$dir/agent2.json" bytesOmitted)"
  log "S=$g GiB done"
  rm -rf "$dir"
done

# ------------------------------------------------------------------ report --

echo
echo "<!-- bench/scale-archive.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), sizes: $SIZES GiB -->"
echo "| GiB | step | time (s) | s per GiB | × floor | peak total RSS (MiB) | peak RssAnon (MiB) | disk (MiB) | kept by the cut (MiB) |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
tail -n +2 "$TSV" | awk -F'\t' '{printf "| %s | %s | %.2f | %.2f | %s | %.1f | %.1f | %.1f | %.1f |\n", $1, $2, $3, $4, ($5==""?"":$5"×"), $6, $7, $8, $9}'
echo
growth_and_data "$TSV"
if [ -n "$PLOT" ]; then
  case $PLOT in /*) ;; *) PLOT="$REPO_ROOT/$PLOT" ;; esac
  python3 "$REPO_ROOT/bench/plot.py" "$TSV" "$PLOT" "crpe: seconds per GiB as the archive grows (half one layer, half 4 MiB layers)" \
    --x gib --y s_per_gib --xlabel "archive (GiB of layers)" --ylabel "seconds per GiB"
fi
