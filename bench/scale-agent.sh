#!/usr/bin/env bash
# How a crpe agent's costs grow with what it holds (issue 16, item 5, third
# dimension): an agent holding 1k, 10k and 50k blobs. Not part of the test
# suite: generated data, loopback only, bounded.
#
# usage: bench/scale-agent.sh [path-to-crpe-binary]
#
#   BENCH_SCALE_BLOBS="1000 10000 50000"  sizes (blobs held; images = blobs/3)
#   BENCH_LAYER_KIB=4                     each image's one random layer
#   BENCH_TAGS_PER_REPO=100               repositories = max(1, images / this)
#   BENCH_FILL_JOBS=8                     images pushed at once while filling
#   BENCH_LAT_N=2000                      manifest requests per latency run
#   BENCH_MAX_SECONDS=1500                hard wall-clock cap for the whole script
#   BENCH_PLOT=docs/scale-agent.svg       where the plot goes ("" for none)
#
# For each size B: images = B/3 (each one layer + one config + one manifest:
# 3 blobs), spread over R = max(1, images/100) repositories library/rep-NNN
# with tags 1.. (so ~100 tags a repository, images tags in all). On a fresh
# `crpe agent --allow-push --token-file --log-format json --gc-interval 1h`
# with its own --data folder:
#   fill       `imagefix many -token -repos -jobs` pushes the images (not a
#              headline figure: its time and rate are reported, with the
#              agent's VmRSS, RssAnon and VmHWM once it is full)
#   start-up   the agent is stopped and started again 3 times: from exec
#              until /healthz answers 200 (`imagefix up`, 2 ms polls; the
#              start walks the blob folder for the store metrics), median,
#              and VmRSS / RssAnon right after (median)
#   manifests  `imagefix lat`: GET, then HEAD, /v2/REPO/manifests/TAG of
#              BENCH_LAT_N tags drawn at random (fixed seed), one after
#              another over one keep-alive connection: p50, p99, and how
#              many distinct tags were asked (at small sizes draws repeat
#              and hit the agent's manifest cache); the agent is sampled
#              meanwhile (`imagefix sample`: VmHWM since the start, the
#              largest RssAnon seen)
#   catalog    `imagefix pages`: GET /v2/_catalog?n=100, following Link
#              rel="next" to the end: time, pages, bytes
#   tags       the same for library/rep-000's tags with n=10
#   inventory  GET /api/v1/inventory (Bearer token; every blob digest and
#              package): size, time (median of 3), the agent sampled
#   gc         the agent restarted with --gc-interval 2s: the "duration" of
#              its first 3 "garbage collection" log lines, median (nothing
#              to collect: the cost of finding that out: every tag, every
#              link and the blob folder read)
#   fsck       the agent stopped: `crpe fsck --data --json` (re-hashes every
#              blob, checks every repository's links, manifests and tags)
#              under `imagefix watch`: time, peak RSS, RssAnon; its summary
#              must count every blob and tag, with no problem
#   disk       the data folder: bytes (du -sb) and blocks allocated (du -sk:
#              every small blob takes a whole block), and the index alone
# The page cache is warm throughout (the data was just written): these are
# the costs of the work itself, not of a cold disk.
#
# Data: $TMP/scale-agent.tsv (printed too), one row per size and
# measurement: blobs, images, repos, tags, metric, label, value, unit
# (s, ms, MiB, KiB, count, /s). Then a markdown table (a row per metric, a
# column per size) and the growth between sizes: (value ratio) / (blobs
# ratio), 1.00 is linear, below 1 better than linear (a per-request
# latency should stay flat: ~ 1 / blobs ratio). With BENCH_PLOT, an SVG of
# the times and sizes against blobs on log-log axes (bench/plot.py).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES="${BENCH_SCALE_BLOBS:-1000 10000 50000}"
KIB="${BENCH_LAYER_KIB:-4}"
PER_REPO="${BENCH_TAGS_PER_REPO:-100}"
JOBS="${BENCH_FILL_JOBS:-8}"
LAT_N="${BENCH_LAT_N:-2000}"
PLOT="${BENCH_PLOT-docs/scale-agent.svg}"

AGENT_PID="" SAMPLERS=""
on_exit() {
  local p
  for p in $SAMPLERS $AGENT_PID; do stop_pid "$p"; done
}
bench_init crpe-bench-scale-agent "${BENCH_MAX_SECONDS:-1500}"
require_cmd curl go python3 du
note_load
build_fix imagefix
build_crpe "$@"
crpe_has_flags agent --addr --allow-push --data --token-file --gc-interval --log-format
crpe_has_flags fsck --data --json

TOKEN="$(rand_hex 24)"
printf '%s\n' "$TOKEN" >"$TMP/token"; chmod 600 "$TMP/token"
TSV="$TMP/scale-agent.tsv"
printf 'blobs\timages\trepos\ttags\tmetric\tlabel\tvalue\tunit\n' >"$TSV"

# bmib BYTES: in MiB, unrounded (row prints 6 significant digits)
bmib() { awk -v b="$1" 'BEGIN{print b/1048576}'; }

# row metric label value unit: one measurement of the current size
row() {
  [ -n "$3" ] || die "no value for $1 at $BLOBS blobs"
  awk -v b="$BLOBS" -v i="$IMAGES" -v r="$REPOS" -v t="$TAGS" -v m="$1" -v l="$2" -v v="$3" -v u="$4" \
    'BEGIN{printf "%d\t%d\t%d\t%d\t%s\t%s\t%.6g\t%s\n", b, i, r, t, m, l, v, u}' >>"$TSV"
}

# agent_start LOG [FLAGS...] -> AGENT_PID, AGENT_URL, UP_S (seconds from exec
# until /healthz answers): a crpe agent on $DATA, on a fresh port
agent_start() {
  local logf=$1 port t0; shift
  port=$(free_port); AGENT_URL="http://$HOST:$port"
  t0=$EPOCHREALTIME
  "$CRPE_BIN" agent --addr "$HOST:$port" --allow-push --data "$DATA" --token-file "$TMP/token" \
    --log-format json "$@" >>"$logf" 2>&1 &
  AGENT_PID=$!
  timeout 130 "$TMP/imagefix" up -url "$AGENT_URL/healthz" -since "$t0" -timeout 120s >"$DIR/up.json" \
    || { tail -20 "$logf" >&2; die "crpe agent did not answer /healthz at $BLOBS blobs"; }
  UP_S=$(jnum "$DIR/up.json" seconds)
}
agent_stop() { stop_pid "$AGENT_PID"; AGENT_PID=""; }

# go_seconds DURATION: a Go duration string (1m2.5s, 12.3ms, 850µs) in seconds
go_seconds() {
  awk -v d="$1" 'BEGIN{
    split("h m s ms us µs ns", u, " "); f["h"]=3600; f["m"]=60; f["s"]=1; f["ms"]=1e-3; f["us"]=1e-6; f["µs"]=1e-6; f["ns"]=1e-9
    t=0; ok=0
    while (match(d, /^[0-9.]+(ns|us|µs|ms|h|m|s)/)) {
      tok=substr(d, 1, RLENGTH); d=substr(d, RLENGTH+1)
      match(tok, /^[0-9.]+/); n=substr(tok, 1, RLENGTH); unit=substr(tok, RLENGTH+1)
      t+=n*f[unit]; ok=1
    }
    if (!ok || d != "") exit 1
    printf "%.6f", t }'
}

for BLOBS in $SIZES; do
  IMAGES=$(( BLOBS / 3 ))
  [ "$IMAGES" -ge 1 ] || die "size $BLOBS: fewer than 3 blobs"
  REPOS=$(( IMAGES / PER_REPO )); [ "$REPOS" -ge 1 ] || REPOS=1
  TAGS=$IMAGES
  BLOBS=$(( IMAGES * 3 ))
  DIR="$TMP/b$BLOBS" DATA="$TMP/b$BLOBS/data"
  mkdir -p "$DIR"
  log "B=$BLOBS: $IMAGES images of one $KIB KiB layer in $REPOS repositories ($TAGS tags)"

  # ---- fill
  agent_start "$DIR/agent.log" --gc-interval 1h
  fill_t=$(( 120 + IMAGES / 10 ))
  t0=$(now)
  timeout "$fill_t" "$TMP/imagefix" many -registry "$AGENT_URL" -token "$TOKEN" -refs "$DIR/refs" -n "$IMAGES" \
    -repos "$REPOS" -layer-kib "$KIB" -jobs "$JOBS" -timeout "$(( fill_t - 5 ))s" >"$DIR/many.json" \
    || { tail -20 "$DIR/agent.log" >&2; die "imagefix many -n $IMAGES failed"; }
  t1=$(now); fill=$(elapsed "$t0" "$t1")
  rate=$(awk -v n="$IMAGES" -v s="$fill" 'BEGIN{printf "%.1f", n/s}')
  log "B=$BLOBS: filled in $fill s: $rate images/s, $(awk -v n="$BLOBS" -v s="$fill" 'BEGIN{printf "%.0f", n/s}') blobs/s ($JOBS pushes at once)"
  row fill_s "fill (imagefix many, untimed)" "$fill" s
  row fill_rate "fill rate" "$rate" "images/s"
  row rss_filled "agent VmRSS, full" "$(kib_mib "$(status_kib "$AGENT_PID" VmRSS)")" MiB
  row anon_filled "agent RssAnon, full" "$(kib_mib "$(status_kib "$AGENT_PID" RssAnon)")" MiB
  row hwm_fill "agent VmHWM over the fill" "$(kib_mib "$(status_kib "$AGENT_PID" VmHWM)")" MiB
  agent_stop

  # ---- start-up: 3 restarts, the last one kept for the reads
  ups="" rsss="" anons=""
  for r in 1 2 3; do
    agent_start "$DIR/agent.log" --gc-interval 1h
    ups+=" $UP_S"
    rsss+=" $(status_kib "$AGENT_PID" VmRSS)"; anons+=" $(status_kib "$AGENT_PID" RssAnon)"
    [ "$r" = 3 ] || agent_stop
  done
  # shellcheck disable=SC2086 # lists of numbers
  { startup=$(median $ups); rss_start=$(median $rsss); anon_start=$(median $anons); }
  log "B=$BLOBS: start-up (s):$ups"
  row startup_s "start-up (exec → /healthz)" "$startup" s
  row rss_start "agent VmRSS after start" "$(kib_mib "$rss_start")" MiB
  row anon_start "agent RssAnon after start" "$(kib_mib "$anon_start")" MiB

  # ---- manifest GET and HEAD, the agent sampled
  sample_start "$AGENT_PID" "$DIR/reads-mem.json"; SAMPLERS=$SAMPLER_PID
  # HEAD draws other tags than GET: not only those GET just brought into
  # the agent's manifest cache
  for m in GET HEAD; do
    seed=1; [ "$m" = GET ] || seed=2
    timeout 300 "$TMP/imagefix" lat -url "$AGENT_URL" -token "$TOKEN" -refs "$DIR/refs" -n "$LAT_N" -method "$m" \
      -seed "$seed" -timeout 290s >"$DIR/lat-$m.json" || die "imagefix lat $m failed at $BLOBS blobs: $(cat "$DIR/lat-$m.json")"
  done
  sample_stop "$SAMPLERS"; SAMPLERS=""
  log "B=$BLOBS: GET $(cat "$DIR/lat-GET.json")"
  log "B=$BLOBS: HEAD $(cat "$DIR/lat-HEAD.json")"
  row lat_distinct "manifests asked (distinct tags)" "$(jnum "$DIR/lat-GET.json" distinct)" count
  row get_p50 "manifest GET p50" "$(jnum "$DIR/lat-GET.json" p50_ms)" ms
  row get_p99 "manifest GET p99" "$(jnum "$DIR/lat-GET.json" p99_ms)" ms
  row head_p50 "manifest HEAD p50" "$(jnum "$DIR/lat-HEAD.json" p50_ms)" ms
  row head_p99 "manifest HEAD p99" "$(jnum "$DIR/lat-HEAD.json" p99_ms)" ms
  row rss_reads_peak "agent VmHWM (start + manifests)" "$(jmib "$DIR/reads-mem.json" peak_rss_kib)" MiB
  row anon_reads "agent RssAnon peak, manifests" "$(jmib "$DIR/reads-mem.json" rss_anon_kib)" MiB

  # ---- catalog and one repository's tags, paged
  timeout 300 "$TMP/imagefix" pages -url "$AGENT_URL" -token "$TOKEN" -path /v2/_catalog -n 100 -timeout 290s \
    >"$DIR/catalog.json" || die "catalog paging failed at $BLOBS blobs"
  [ "$(jnum "$DIR/catalog.json" entries)" = "$REPOS" ] || die "catalog listed $(jnum "$DIR/catalog.json" entries) repositories, not $REPOS"
  row catalog_s "GET /v2/_catalog, paged n=100" "$(jnum "$DIR/catalog.json" seconds)" s
  row catalog_pages "catalog pages" "$(jnum "$DIR/catalog.json" pages)" count
  row catalog_kib "catalog bytes" "$(awk -v b="$(jnum "$DIR/catalog.json" bytes)" 'BEGIN{print b/1024}')" KiB
  repo0=$(head -1 "$DIR/refs" | cut -d: -f1)
  ntags0=$(grep -c "^$repo0:" "$DIR/refs")
  timeout 120 "$TMP/imagefix" pages -url "$AGENT_URL" -token "$TOKEN" -path "/v2/$repo0/tags/list" -n 10 -timeout 110s \
    >"$DIR/tags.json" || die "tag list paging failed at $BLOBS blobs"
  [ "$(jnum "$DIR/tags.json" entries)" = "$ntags0" ] || die "$repo0 listed $(jnum "$DIR/tags.json" entries) tags, not $ntags0"
  row tags_s "GET a repository's tags, paged n=10" "$(jnum "$DIR/tags.json" seconds)" s
  row tags_listed "its tags" "$ntags0" count
  row tags_pages "its tag list pages" "$(jnum "$DIR/tags.json" pages)" count

  # ---- inventory, median of 3, the agent sampled
  sample_start "$AGENT_PID" "$DIR/inv-mem.json"; SAMPLERS=$SAMPLER_PID
  invs=""
  for _ in 1 2 3; do
    w=$(curl -sS --fail --max-time 120 -H "Authorization: Bearer $TOKEN" -o "$DIR/inventory.json" \
      -w '%{size_download} %{time_total}' "$AGENT_URL/api/v1/inventory") || die "inventory failed at $BLOBS blobs"
    invs+=" ${w#* }"
  done
  sample_stop "$SAMPLERS"; SAMPLERS=""
  inv_bytes=${w%% *}
  ndig=$(grep -o '"sha256:' "$DIR/inventory.json" | wc -l)
  [ "$ndig" = "$BLOBS" ] || die "inventory lists $ndig digests, not $BLOBS"
  # shellcheck disable=SC2086 # a list of numbers
  row inventory_s "GET /api/v1/inventory" "$(median $invs)" s
  row inventory_mib "inventory size" "$(bmib "$inv_bytes")" MiB
  row rss_inventory_peak "agent VmHWM (… + inventory)" "$(jmib "$DIR/inv-mem.json" peak_rss_kib)" MiB
  row anon_inventory "agent RssAnon peak, inventory" "$(jmib "$DIR/inv-mem.json" rss_anon_kib)" MiB
  agent_stop

  # ---- garbage collection: restarted with --gc-interval 2s, 3 runs
  : >"$DIR/gc.log"
  agent_start "$DIR/gc.log" --gc-interval 2s
  gc_wait=$(( 60 + BLOBS / 500 ))
  for _ in $(seq 1 $(( gc_wait * 10 ))); do
    [ "$(grep -c '"msg":"garbage collection"' "$DIR/gc.log")" -lt 3 ] || break
    grep -q '"msg":"garbage collection failed"' "$DIR/gc.log" && { tail -5 "$DIR/gc.log" >&2; die "garbage collection failed"; }
    sleep 0.1
  done
  agent_stop
  gcs=""
  while IFS= read -r d; do gcs+=" $(go_seconds "$d")" || die "unreadable GC duration $d"; done \
    < <(grep '"msg":"garbage collection"' "$DIR/gc.log" | head -3 | sed -n 's/.*"duration":"\([^"]*\)".*/\1/p')
  [ "$(wc -w <<<"$gcs")" = 3 ] || die "fewer than 3 garbage collections logged in ${gc_wait} s at $BLOBS blobs"
  log "B=$BLOBS: GC (s):$gcs"
  # shellcheck disable=SC2086 # a list of numbers
  row gc_s "garbage collection (nothing to drop)" "$(median $gcs)" s

  # ---- fsck, the agent stopped
  settle; t0=$(now)
  tw "$DIR/fsck-mem.json" 900 "$CRPE_BIN" fsck --data "$DATA" --json >"$DIR/fsck.json" 2>"$DIR/fsck.err" \
    || { tail -20 "$DIR/fsck.err" "$DIR/fsck.json" >&2; die "crpe fsck failed at $BLOBS blobs"; }
  t1=$(now)
  fblobs=$(sed -n 's/.*"blobs": *\([0-9]*\).*/\1/p' "$DIR/fsck.json")
  ftags=$(sed -n 's/.*"tags": *\([0-9]*\).*/\1/p' "$DIR/fsck.json")
  fprob=$(sed -n 's/.*"problems": *\([0-9]*\).*/\1/p' "$DIR/fsck.json")
  if [ "$fblobs" != "$BLOBS" ] || [ "$ftags" != "$TAGS" ] || [ "$fprob" != 0 ]; then
    die "fsck counted $fblobs blobs, $ftags tags, $fprob problems (expected $BLOBS, $TAGS, 0)"
  fi
  row fsck_s "crpe fsck" "$(elapsed "$t0" "$t1")" s
  row fsck_peak_rss "fsck peak RSS" "$(jmib "$DIR/fsck-mem.json" peak_rss_kib)" MiB
  row fsck_anon "fsck RssAnon peak" "$(jmib "$DIR/fsck-mem.json" rss_anon_kib)" MiB

  # ---- disk
  row disk_mib "data folder, bytes (du -sb)" "$(bmib "$(du -sb "$DATA" | cut -f1)")" MiB
  row disk_alloc_mib "data folder, allocated (du -sk)" "$(awk -v k="$(du -sk "$DATA" | cut -f1)" 'BEGIN{print k/1024}')" MiB
  row index_mib "index.db (grows in steps)" "$(bmib "$(stat -c %s "$DATA/index.db")")" MiB
  log "B=$BLOBS done"
  rm -rf "$DIR"
done

# ------------------------------------------------------------------ report --

echo
echo "<!-- bench/scale-agent.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), sizes: $SIZES blobs (images of one ${KIB} KiB layer, ~${PER_REPO} tags a repository) -->"
awk -F'\t' '
  NR==1 { next }
  !($1 in seen) { seen[$1]=1; bs[++k]=$1; sz[k]=sprintf("%s (%s images, %s repos)", $1, $2, $3) }
  !($5 in mseen) { mseen[$5]=1; ms[++nm]=$5; lab[$5]=$6; unit[$5]=$8 }
  { v[$5","$1]=$7 }
  function f(x, u) {
    if (x == "") return "–"
    if (u == "count" || x+0 >= 100) return sprintf("%.0f", x)
    if (x+0 >= 10) return sprintf("%.1f", x)
    if (x+0 >= 1) return sprintf("%.2f", x)
    return sprintf("%.3g", x)
  }
  END {
    h="| measurement | unit |"; s="|---|---|"
    for (i=1;i<=k;i++) { h=h " " sz[i] " |"; s=s "---:|" }
    for (i=2;i<=k;i++) { h=h " growth " bs[i-1] "→" bs[i] " |"; s=s "---:|" }
    print h; print s
    for (j=1;j<=nm;j++) {
      m=ms[j]; line="| " lab[m] " | " unit[m] " |"
      for (i=1;i<=k;i++) line=line " " f(v[m","bs[i]], unit[m]) " |"
      for (i=2;i<=k;i++) {
        a=v[m","bs[i-1]]; b=v[m","bs[i]]
        # a rate is not a cost: its growth would read backwards
        line=line " " ((a+0>0 && b!="" && unit[m] !~ /\/s$/) ? sprintf("%.2f", (b/a)/(bs[i]/bs[i-1])) : "–") " |"
      }
      print line
    }
  }' "$TSV"
echo
echo "Growth: (value ratio) / (blobs ratio) between two sizes; 1.00 is linear, below 1 better than linear (a flat per-request latency shows as 1 / the blobs ratio), above 1 worse. At small sizes the latency runs ask the same few manifests again and again (served from the agent's 8 MiB manifest cache); at large ones most are asked once (read from the store): see the distinct tags row. Memory is the agent's or fsck's /proc status (VmRSS, RssAnon; VmHWM: the kernel's high-water mark since the process started); times are wall clock on a warm page cache."
echo
echo "Data (TSV):"
sed 's/^/    /' "$TSV"
if [ -n "$PLOT" ]; then
  case $PLOT in /*) ;; *) PLOT="$REPO_ROOT/$PLOT" ;; esac
  timeout 60 python3 "$REPO_ROOT/bench/plot.py" \
    --metrics fill_s,startup_s,get_p50,get_p99,head_p50,catalog_s,tags_s,inventory_s,gc_s,fsck_s,anon_filled,anon_start,anon_reads,anon_inventory,fsck_anon,inventory_mib,index_mib,disk_alloc_mib \
    "$TSV" "$PLOT" "crpe agent: cost against the blobs it holds (images of one ${KIB} KiB layer, ~${PER_REPO} tags a repository)"
  log "plot written to $PLOT"
fi
