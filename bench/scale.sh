#!/usr/bin/env bash
# How crpe's cost grows with its work (issue 16, item 5), first dimension:
# a package of N images. Not part of the test suite: generated data,
# loopback only, bounded.
#
# usage: bench/scale.sh [path-to-crpe-binary]
#
#   BENCH_SCALE_IMAGES="10 100 1000"   package sizes (images)
#   BENCH_LAYER_KIB=64                 each image's one random layer
#   BENCH_MAX_SECONDS=900              hard wall-clock cap for the whole script
#   BENCH_PLOT=docs/scale-images.svg   where the plot goes ("" for none)
#
# For each size N: a fresh docker-registry holds N single-layer linux/amd64
# images (`imagefix many`), then, each timed once under `imagefix watch`
# (peak total RSS and RssAnon), with `sync` before:
#   export   crpe export (cold: an empty --data, every image fetched)
#   inspect  crpe inspect --verify of the archive
#   import   crpe import --data into a fresh data folder
#   agent    crpe import --to a fresh crpe agent (--full), and the agent's
#            peak RSS (imagefix sample)
# It prints a table (time, per-image time, peak RSS, archive size) and the
# growth between sizes (time ratio over size ratio: 1.0 is linear), writes
# the data as TSV ($TMP/scale.tsv, printed too) and, with BENCH_PLOT, an SVG
# of time per image against N (bench/plot.py, standard library only).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES="${BENCH_SCALE_IMAGES:-10 100 1000}"
KIB="${BENCH_LAYER_KIB:-64}"
PLOT="${BENCH_PLOT-docs/scale-images.svg}"
PLATFORM=linux/amd64

DIST_PID="" AGENT_PID="" SAMPLERS=""
on_exit() {
  local p
  for p in $SAMPLERS $AGENT_PID $DIST_PID; do stop_pid "$p"; done
}
bench_init crpe-bench-scale "${BENCH_MAX_SECONDS:-900}"
require_x "$DIST_BIN" "apt-get install -y docker-registry"
require_cmd curl go python3
note_load
build_fix imagefix
build_crpe "$@"
crpe_has_flags export --data --platform --registry-endpoint --json
crpe_has_flags import --to --token --full --data --json

TOKEN="$(rand_hex 24)"
printf '%s\n' "$TOKEN" >"$TMP/token"; chmod 600 "$TMP/token"
TSV="$TMP/scale.tsv"
printf 'images\tstep\tseconds\tper_image_ms\tpeak_rss_mib\trss_anon_mib\tarchive_mib\n' >"$TSV"

row() { # n step seconds rss anon archive_bytes
  awk -v n="$1" -v s="$2" -v t="$3" -v r="$4" -v a="$5" -v b="$6" \
    'BEGIN{printf "%d\t%s\t%.3f\t%.3f\t%.1f\t%.1f\t%.1f\n", n, s, t, 1000*t/n, r, a, b/1048576}' >>"$TSV"
}

for n in $SIZES; do
  dir="$TMP/n$n"
  mkdir -p "$dir"
  dist_start "$dir/upstream"
  log "N=$n: pushing $n images of one ${KIB} KiB layer"
  timeout 600 "$TMP/imagefix" many -registry "$DIST_URL" -pkg "$dir/pkg.json" -tmp "$dir" -n "$n" -layer-kib "$KIB" \
    -timeout 590s >"$dir/many.json" || die "imagefix many -n $n failed"
  archive="$dir/scale.kubepkg.tgz"

  settle; t0=$(now)
  tw "$dir/export-mem.json" 600 "$CRPE_BIN" export -f "$dir/pkg.json" -o "$archive" --data "$dir/cache" --platform "$PLATFORM" \
    --registry-endpoint "docker.io=$DIST_URL" --json >"$dir/export.json" 2>"$dir/export.err" \
    || { tail -20 "$dir/export.err" >&2; die "export N=$n failed"; }
  t1=$(now); bytes=$(stat -c %s "$archive")
  row "$n" export "$(elapsed "$t0" "$t1")" "$(jmib "$dir/export-mem.json" peak_rss_kib)" "$(jmib "$dir/export-mem.json" rss_anon_kib)" "$bytes"
  stop_pid "$DIST_PID"; DIST_PID=""; rm -rf "$dir/upstream" "$dir/cache"

  settle; t0=$(now)
  tw "$dir/inspect-mem.json" 600 "$CRPE_BIN" inspect "$archive" --verify --json >"$dir/inspect.json" 2>"$dir/inspect.err" \
    || { tail -20 "$dir/inspect.err" >&2; die "inspect N=$n failed"; }
  t1=$(now)
  row "$n" inspect "$(elapsed "$t0" "$t1")" "$(jmib "$dir/inspect-mem.json" peak_rss_kib)" "$(jmib "$dir/inspect-mem.json" rss_anon_kib)" "$bytes"

  settle; t0=$(now)
  tw "$dir/import-mem.json" 600 "$CRPE_BIN" import "$archive" --data "$dir/local" --json >"$dir/import.json" 2>"$dir/import.err" \
    || { tail -20 "$dir/import.err" >&2; die "import --data N=$n failed"; }
  t1=$(now)
  row "$n" import "$(elapsed "$t0" "$t1")" "$(jmib "$dir/import-mem.json" peak_rss_kib)" "$(jmib "$dir/import-mem.json" rss_anon_kib)" "$bytes"
  rm -rf "$dir/local"

  port=$(free_port); url="http://$HOST:$port"
  "$CRPE_BIN" agent --addr "$HOST:$port" --data "$dir/agent" --token-file "$TMP/token" --log-format json >"$dir/agent.log" 2>&1 &
  AGENT_PID=$!
  wait_http "$url/healthz" 20 || { tail -20 "$dir/agent.log" >&2; die "crpe agent did not start"; }
  sample_start "$AGENT_PID" "$dir/agent-mem.json"; sp=$SAMPLER_PID; SAMPLERS=$sp
  settle; t0=$(now)
  timeout 600 "$CRPE_BIN" import "$archive" --to "$url" --token "$TOKEN" --full --json >"$dir/agent-import.json" 2>"$dir/agent-import.err" \
    || { tail -20 "$dir/agent-import.err" "$dir/agent.log" >&2; die "import --to N=$n failed"; }
  t1=$(now)
  sample_stop "$sp"; SAMPLERS=""
  stop_pid "$AGENT_PID"; AGENT_PID=""
  row "$n" agent "$(elapsed "$t0" "$t1")" "$(jmib "$dir/agent-mem.json" peak_rss_kib)" "$(jmib "$dir/agent-mem.json" rss_anon_kib)" "$bytes"
  log "N=$n done: $(grep -c . "$TSV") rows"
  rm -rf "$dir"
done

# ------------------------------------------------------------------ report --

echo
echo "<!-- bench/scale.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), sizes: $SIZES images of one ${KIB} KiB layer -->"
echo "| images | step | time (s) | per image (ms) | peak total RSS (MiB) | peak RssAnon (MiB) | archive (MiB) |"
echo "|---:|---|---:|---:|---:|---:|---:|"
tail -n +2 "$TSV" | awk -F'\t' '{printf "| %s | %s | %.2f | %.2f | %.1f | %.1f | %.1f |\n", $1, $2, $3, $4, $5, $6, $7}'
echo
growth_and_data "$TSV"
if [ -n "$PLOT" ]; then
  case $PLOT in /*) ;; *) PLOT="$REPO_ROOT/$PLOT" ;; esac
  python3 "$REPO_ROOT/bench/plot.py" "$TSV" "$PLOT" "crpe: time per image as the package grows (images of one ${KIB} KiB layer)"
  log "plot written to $PLOT"
fi
