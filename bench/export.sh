#!/usr/bin/env bash
# Benchmark `crpe export` and `crpe serve`'s shared cold fetch against crane and
# skopeo, with the same images on the same local upstream (Debian's
# docker-registry, filesystem storage) in the same run, on loopback only.
#
# usage: bench/export.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built as it ships (the Dockerfile's flags):
#   `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" ./cmd/crpe`.
#   BENCH_RUNS=3            repetitions per measurement (median reported)
#   BENCH_BIG_MIB=200       size of library/big's single random layer
#   BENCH_PULLERS=16        concurrent cold pulls through one crpe serve
#   BENCH_MAX_SECONDS=420   hard wall-clock cap for the whole script
#
# Measures, interleaved, fresh data dirs and outputs every time, after one
# untimed warm-up round of crpe and crane (and with memory prefaulted before
# every timed step: lib.sh settle):
#   cold export   crpe export --platform linux/amd64 of 4 images (3 multi-arch
#                 + one 200 MiB single layer) vs `crane pull --format=oci`
#                 of the same 4 vs `skopeo copy ... oci-archive:` per image
#   warm export   crpe export --offline from a filled --data vs `cat` of the
#                 archive's blob files into one file on the same disk
#   memory        peak total RSS and peak RssAnon (heap + stacks) of every
#                 crpe export, crane pull and skopeo copy (`imagefix watch`:
#                 /proc status sampled every 5 ms, and the rusage), and of
#                 each crpe serve (`imagefix sample`)
#   shared fetch  BENCH_PULLERS concurrent cold pulls of the big blob through
#                 a fresh crpe serve vs one cold pull through a fresh one, and
#                 the upstream GETs of that blob (docker-registry access log);
#                 for reference, the same pulls again once cached, and straight
#                 from docker-registry (what the machine's loopback allows)
#
# `sync` runs (untimed) before every timed step, so no step pays for the
# writeback of the one before.
#
# Everything binds to 127.0.0.1, every step is time-bounded, and an EXIT trap
# stops the servers and removes the temp dir. Typical run time: about 1 min
# (2 CPUs); the watchdog stops it at BENCH_MAX_SECONDS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${BENCH_RUNS:-3}"
BIG_MIB="${BENCH_BIG_MIB:-200}"
PULLERS="${BENCH_PULLERS:-16}"
SKOPEO="${SKOPEO:-/usr/bin/skopeo}"
CRANE="${CRANE:-$(go env GOPATH 2>/dev/null)/bin/crane}"
PLATFORM=linux/amd64
IMAGES=(a b c big)

DIST_PID="" SERVE_PID="" PULL_PIDS="" SAMPLERS=""
on_exit() {
  local p
  for p in $PULL_PIDS; do kill "$p" 2>/dev/null || true; done
  for p in $SAMPLERS $SERVE_PID $DIST_PID; do stop_pid "$p"; done
  skopeo_cache_clean
}
bench_init crpe-bench-export 420
skopeo_cache_note

require_x "$DIST_BIN" "apt-get install -y docker-registry"
require_x "$SKOPEO" "apt-get install -y skopeo"
require_x "$CRANE" "go install github.com/google/go-containerregistry/cmd/crane@latest"
require_cmd curl go
note_load

# ------------------------------------------------------------------ build ---

build_fix imagefix
build_crpe "$@"
crpe_has_flags export --file --output --data --platform --registry-endpoint --offline --json
crpe_has_flags serve --addr --data --registry-endpoint

# --------------------------------------------------------------- upstream ---

# the access log (combined format) goes to access.log, the rest to dist.log
dist_start "$TMP/dist-data" "" "$TMP/access.log"
UP="$HOST:$DIST_PORT"
log "docker-registry on $DIST_URL"

log "pushing fixtures: library/{a,b,c}:1 (linux/amd64 + linux/arm64), library/big:1 (${BIG_MIB} MiB layer)"
PKG="$TMP/pkg.json"
fix="$(timeout 180 "$TMP/imagefix" export -registry "$DIST_URL" -pkg "$PKG" -tmp "$TMP" -big-mib "$BIG_MIB")" \
  || die "fixture push failed"
BIG_DIGEST="$(sed -n 's/.*"big_digest":"\([^"]*\)".*/\1/p' <<<"$fix")"
BIG_SIZE="$(sed -n 's/.*"big_size":\([0-9]*\).*/\1/p' <<<"$fix")"
AMD64_BYTES="$(sed -n 's/.*"linux\/amd64":\([0-9]*\).*/\1/p' <<<"$fix")"
if [ -z "$BIG_DIGEST" ] || [ -z "$BIG_SIZE" ]; then die "imagefix export said: $fix"; fi
log "fixtures pushed: $fix"

# big_gets FROM_LINE: upstream GETs of the big blob logged after line FROM_LINE
big_gets() { tail -n "+$(( $1 + 1 ))" "$TMP/access.log" | grep -c "\"GET /v2/library/big/blobs/$BIG_DIGEST " || true; }
log_lines() { wc -l <"$TMP/access.log"; }

# ---------------------------------------------------------- cold exports ---

declare -A WALL RSS ANON FILEB BYTES
run_cold() { # tool run
  local tool=$1 r=$2 dir="$TMP/cold/$1-$2" t0 t1 w rss anon bytes gets l0 i
  mkdir -p "$dir"
  settle
  l0=$(log_lines)
  case $tool in
    crpe | crpe-noart)
      local extra=()
      # crpe-noart: --artifacts none, crane's work (no signature looked for)
      [ "$tool" = crpe-noart ] && extra=(--artifacts none)
      t0=$(now)
      tw "$dir/mem.json" 180 "$CRPE_BIN" export -f "$PKG" -o "$dir/out.tgz" --data "$dir/data" --platform "$PLATFORM" \
        --registry-endpoint "docker.io=$DIST_URL" --json "${extra[@]}" >"$dir/summary.json" 2>"$dir/err" \
        || { tail -20 "$dir/err" >&2; die "crpe export run $r failed"; }
      t1=$(now)
      rss=$(jmib "$dir/mem.json" peak_rss_kib); anon=$(jmib "$dir/mem.json" rss_anon_kib)
      FILEB[cold]+=" $(jmib "$dir/mem.json" rss_file_kib)"
      bytes=$(stat -c %s "$dir/out.tgz")
      grep -q '"ref": "docker.io/library/big:1"' "$dir/summary.json" || die "crpe export summary lacks library/big: $(head -c 400 "$dir/summary.json")"
      ;;
    crane)
      local refs=()
      for i in "${IMAGES[@]}"; do refs+=("$UP/library/$i:1"); done
      t0=$(now)
      tw "$dir/mem.json" 180 "$CRANE" pull --insecure --format=oci --platform "$PLATFORM" "${refs[@]}" "$dir/layout" \
        >"$dir/out" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "crane pull run $r failed"; }
      t1=$(now)
      rss=$(jmib "$dir/mem.json" peak_rss_kib); anon=$(jmib "$dir/mem.json" rss_anon_kib)
      [ -s "$dir/layout/index.json" ] || die "crane wrote no index.json"
      bytes=$(du -sb "$dir/layout" | cut -f1)
      ;;
    skopeo)
      local rs=() as=() tmpd="$dir/tmp"
      mkdir -p "$tmpd"
      t0=$(now)
      for i in "${IMAGES[@]}"; do
        TMPDIR="$tmpd" XDG_DATA_HOME="$TMP/xdg" tw "$dir/mem-$i.json" 180 "$SKOPEO" --insecure-policy \
          --override-arch amd64 --override-os linux copy -q --src-tls-verify=false \
          "docker://$UP/library/$i:1" "oci-archive:$dir/$i.tar:docker.io/library/$i:1" \
          >"$dir/out" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "skopeo copy $i run $r failed"; }
        rs+=("$(jmib "$dir/mem-$i.json" peak_rss_kib)"); as+=("$(jmib "$dir/mem-$i.json" rss_anon_kib)")
      done
      t1=$(now)
      rss=$(maxof "${rs[@]}"); anon=$(maxof "${as[@]}")
      bytes=$(cat "$dir"/*.tar | wc -c)
      ;;
  esac
  w=$(elapsed "$t0" "$t1")
  gets=$(big_gets "$l0")
  WALL[$tool]+=" $w"; RSS[$tool]+=" $rss"; ANON[$tool]+=" $anon"; BYTES[$tool]=$bytes
  log "cold run $r $tool: ${w} s, peak RSS ${rss} MiB (RssAnon ${anon}), $(mib "$bytes") MiB written, upstream GETs of the big blob: $gets"
  [ "$gets" = 1 ] || log "WARNING: $tool fetched the big blob $gets times from upstream"
}

# one untimed round first: the fixture push just wrote ~500 MiB, and the
# first exports after it measured the disk still busy with it (crpe fsyncs
# its cache, crane does not, so only crpe's first runs were slow)
log "warm-up round (not recorded)"
for tool in crpe crane; do run_cold "$tool" 0; rm -rf "$TMP/cold/$tool-0"; done
unset WALL RSS ANON FILEB BYTES
declare -A WALL RSS ANON FILEB BYTES

run_cold_crpe_keep="" # data dir kept from the first crpe run for the warm export

for r in $(seq 1 "$RUNS"); do
  case $(( (r - 1) % 3 )) in
    0) order=(crpe crane skopeo crpe-noart) ;;
    1) order=(crane crpe-noart skopeo crpe) ;;
    2) order=(skopeo crpe crane crpe-noart) ;;
  esac
  for tool in "${order[@]}"; do
    run_cold "$tool" "$r"
    if [ "$tool" = crpe ] && [ -z "$run_cold_crpe_keep" ]; then
      run_cold_crpe_keep="$TMP/cold/crpe-$r"
      # the blob files the archive holds, for the cat peer
      tar -tzf "$run_cold_crpe_keep/out.tgz" | sed -n 's#^blobs/sha256/##p' >"$TMP/blobs.list"
      rm -f "$run_cold_crpe_keep/out.tgz"
    else
      rm -rf "$TMP/cold/$tool-$r"
    fi
  done
done

# ---------------------------------------------------------- warm exports ---

WARM_DATA="$run_cold_crpe_keep/data"
mapfile -t BLOB_FILES < <(sed "s#^#$WARM_DATA/blobs/sha256/#" "$TMP/blobs.list")
for f in "${BLOB_FILES[@]}"; do [ -f "$f" ] || die "blob file $f missing from the warm data dir"; done
CAT_BYTES=$(cat "${BLOB_FILES[@]}" | wc -c) # also warms the page cache
log "warm export: ${#BLOB_FILES[@]} blob files, $(mib "$CAT_BYTES") MiB"
mkdir -p "$TMP/warm"

declare -A TPUT
warm_crpe() { # record?
  local out="$TMP/warm/out.tgz" t0 t1 w bytes
  rm -f "$out"; settle
  t0=$(now)
  tw "$TMP/warm/mem.json" 120 "$CRPE_BIN" export -f "$PKG" -o "$out" --data "$WARM_DATA" --platform "$PLATFORM" \
    --offline --json >"$TMP/warm/summary.json" 2>"$TMP/warm/err" \
    || { tail -20 "$TMP/warm/err" >&2; die "crpe export --offline failed"; }
  t1=$(now)
  w=$(elapsed "$t0" "$t1"); bytes=$(stat -c %s "$out")
  rm -f "$out"
  [ "$1" = 1 ] || return 0
  TPUT[crpe]+=" $(awk -v b="$bytes" -v s="$w" 'BEGIN{printf "%.1f", b/1048576/s}')"
  RSS[warm]+=" $(jmib "$TMP/warm/mem.json" peak_rss_kib)"; ANON[warm]+=" $(jmib "$TMP/warm/mem.json" rss_anon_kib)"
  BYTES[warm]=$bytes
  log "warm crpe export --offline: $w s, $(mib "$bytes") MiB archive, $(awk -v b="$bytes" -v s="$w" 'BEGIN{printf "%.1f", b/1048576/s}') MiB/s, peak RSS $(jmib "$TMP/warm/mem.json" peak_rss_kib) MiB (RssAnon $(jmib "$TMP/warm/mem.json" rss_anon_kib))"
}
warm_cat() { # record? mode: 0 cat, 1 cat + fsync, 2 cat | cat (user-space copies)
  local out="$TMP/warm/cat.out" t0 t1 w key=cat
  rm -f "$out"; settle
  t0=$(now)
  case $2 in
    1) key=catsync
       timeout 120 cat "${BLOB_FILES[@]}" >"$out" && timeout 60 sync "$out" ;;
    2) key=catpipe
       # a pipe in between: the second cat must read() and write(), as any
       # program that looks at the bytes does
       timeout 120 cat "${BLOB_FILES[@]}" | timeout 120 cat >"$out" ;;
    *) timeout 120 cat "${BLOB_FILES[@]}" >"$out" ;;
  esac
  t1=$(now)
  w=$(elapsed "$t0" "$t1")
  rm -f "$out"
  [ "$1" = 1 ] || return 0
  TPUT[$key]+=" $(awk -v b="$CAT_BYTES" -v s="$w" 'BEGIN{printf "%.1f", b/1048576/s}')"
  log "warm $key: $w s, $(awk -v b="$CAT_BYTES" -v s="$w" 'BEGIN{printf "%.1f", b/1048576/s}') MiB/s"
}
warm_crpe 0; warm_cat 0 0 # warm-up, not recorded
for r in $(seq 1 "$RUNS"); do
  if (( r % 2 )); then warm_crpe 1; warm_cat 1 0; warm_cat 1 1; warm_cat 1 2
  else warm_cat 1 2; warm_cat 1 1; warm_cat 1 0; warm_crpe 1; fi
done

rm -rf "$run_cold_crpe_keep"

# ------------------------------------------------- shared cold blob fetch ---

start_serve() { # data-dir -> SERVE_PID, SERVE_URL
  local p; p=$(free_port)
  SERVE_URL="http://$HOST:$p"
  "$CRPE_BIN" serve --addr "$HOST:$p" --data "$1" --registry-endpoint "docker.io=$DIST_URL" \
    >>"$TMP/serve.log" 2>&1 &
  SERVE_PID=$!
  wait_http "$SERVE_URL/healthz" 20 || { tail -20 "$TMP/serve.log" >&2; die "crpe serve did not start"; }
}

declare -A PULL GETS FETCHES
# pulls URL N DIR: N concurrent curl GETs of the big blob -> PW (wall seconds);
# dies unless every one got 200 and all the bytes
pulls() {
  local url=$1 n=$2 dir=$3 t0 t1 i pids=() bad=0
  rm -rf "$dir"; mkdir -p "$dir"
  t0=$(now)
  for i in $(seq 1 "$n"); do
    curl -sS -o /dev/null --max-time 120 -w '%{http_code} %{size_download}\n' "$url" >"$dir/$i" 2>&1 &
    pids+=($!)
  done
  PULL_PIDS="${pids[*]}"
  for i in "${pids[@]}"; do wait "$i" || bad=$((bad + 1)); done
  PULL_PIDS=""
  t1=$(now)
  PW=$(elapsed "$t0" "$t1")
  for i in $(seq 1 "$n"); do
    [ "$(cat "$dir/$i")" = "200 $BIG_SIZE" ] || { bad=$((bad + 1)); log "puller $i of $url: $(cat "$dir/$i")"; }
  done
  [ "$bad" = 0 ] || die "$bad of $n pulls of $url failed"
}

pull_run() { # n run
  local n=$1 r=$2 dir="$TMP/serve-$1-$2" l0 gets fetches hwm anon sp warm=""
  mkdir -p "$dir"
  settle
  start_serve "$dir/data"
  sample_start "$SERVE_PID" "$dir/serve-mem.json"; sp=$SAMPLER_PID; SAMPLERS=$sp
  l0=$(log_lines)
  local url="$SERVE_URL/v2/docker.io/library/big/blobs/$BIG_DIGEST"
  pulls "$url" "$n" "$dir/res"
  local cold=$PW
  sleep 0.2 # let docker-registry finish its access-log line
  gets=$(big_gets "$l0")
  fetches=$(curl -fsS --max-time 5 "$SERVE_URL/metrics" | awk '/^crpe_upstream_blob_fetches_total /{print $2}')
  if [ "$n" -gt 1 ]; then
    # reference: the same pulls again, now served from the cache (sendfile path)
    pulls "$url" "$n" "$dir/res"; warm=$PW
    PULLW+=" $warm"
  fi
  sample_stop "$sp"; SAMPLERS=""
  hwm=$(jmib "$dir/serve-mem.json" peak_rss_kib); anon=$(jmib "$dir/serve-mem.json" rss_anon_kib)
  stop_pid "$SERVE_PID"; SERVE_PID=""
  PULL[$n]+=" $cold"; GETS[$n]+=" $gets"; FETCHES[$n]+=" $fetches"; RSS[serve$n]+=" $hwm"; ANON[serve$n]+=" $anon"
  log "serve run $r: $n cold pull(s) of ${BIG_MIB} MiB: $cold s, upstream GETs $gets, crpe upstream fetches ${fetches:-?}, serve peak RSS $hwm MiB (RssAnon $anon)${warm:+; the same $n again from the cache: $warm s}"
  rm -rf "$dir"
}
PULLW="" PULLD=""
for r in $(seq 1 "$RUNS"); do
  if (( r % 2 )); then pull_run 1 "$r"; pull_run "$PULLERS" "$r"
  else pull_run "$PULLERS" "$r"; pull_run 1 "$r"; fi
  # reference: the same pulls straight from docker-registry (no crpe)
  pulls "$DIST_URL/v2/library/big/blobs/$BIG_DIGEST" "$PULLERS" "$TMP/direct"
  PULLD+=" $PW"
  log "serve run $r: $PULLERS pulls straight from docker-registry: $PW s"
done

# ------------------------------------------------------------------ report --

# shellcheck disable=SC2086
{
  C_CRPE=$(median ${WALL[crpe]}); C_CRANE=$(median ${WALL[crane]}); C_SKOPEO=$(median ${WALL[skopeo]}); C_NOART=$(median ${WALL[crpe-noart]})
  SPREAD_CRPE="$(printf '%s\n' ${WALL[crpe]} | sort -g | head -n1)–$(maxof ${WALL[crpe]})"
  SPREAD_NOART="$(printf '%s\n' ${WALL[crpe-noart]} | sort -g | head -n1)–$(maxof ${WALL[crpe-noart]})"
  SPREAD_CRANE="$(printf '%s\n' ${WALL[crane]} | sort -g | head -n1)–$(maxof ${WALL[crane]})"
  R_CRPE=$(maxof ${RSS[crpe]}); R_CRANE=$(maxof ${RSS[crane]}); R_SKOPEO=$(maxof ${RSS[skopeo]}); R_WARM=$(maxof ${RSS[warm]})
  T_CRPE=$(median ${TPUT[crpe]}); T_CAT=$(median ${TPUT[cat]}); T_CATSYNC=$(median ${TPUT[catsync]}); T_CATPIPE=$(median ${TPUT[catpipe]})
  P1=$(median ${PULL[1]}); PN=$(median ${PULL[$PULLERS]}); PNW=$(median $PULLW); PND=$(median $PULLD)
  G1=$(maxof ${GETS[1]}); GN=$(maxof ${GETS[$PULLERS]}); GN_MIN=$(printf '%s\n' ${GETS[$PULLERS]} | sort -g | head -n1)
  S1=$(maxof ${RSS[serve1]}); SN=$(maxof ${RSS[serve$PULLERS]})
  A_CRPE=$(maxof ${ANON[crpe]}); A_CRANE=$(maxof ${ANON[crane]}); A_SKOPEO=$(maxof ${ANON[skopeo]}); A_WARM=$(maxof ${ANON[warm]})
  AS1=$(maxof ${ANON[serve1]}); ASN=$(maxof ${ANON[serve$PULLERS]}); F_CRPE=$(maxof ${FILEB[cold]})
}
GETS_OK="❌"; [ "$GN" = 1 ] && [ "$GN_MIN" = 1 ] && GETS_OK="✅"
NIMG=${#IMAGES[@]}
echo
echo "<!-- bench/export.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), docker-registry $("$DIST_BIN" --version 2>/dev/null | awk '{print $NF}'), crane $("$CRANE" version 2>/dev/null), skopeo $("$SKOPEO" --version | awk '{print $NF}') -->"
echo "Same ${NIMG} images on the same local upstream (docker-registry, filesystem storage): library/{a,b,c}:1 multi-arch (linux/amd64 + linux/arm64, 3–5 random gzip layers, 20–40 MiB per platform) and library/big:1 (one random ${BIG_MIB} MiB layer); ${PLATFORM} exported ($(mib "$AMD64_BYTES") MiB of blobs). Loopback 127.0.0.1, median of ${RUNS} interleaved runs, fresh data dirs and outputs every time."
echo
echo "| metric | crpe | peer | crpe / peer | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| cold export of ${NIMG} images, wall time (s) — vs \`crane pull --format=oci\` | $(fmt "$C_CRPE" 2) | $(fmt "$C_CRANE" 2) | $(ratio "$C_CRPE" "$C_CRANE") | ≤ 1.0× | $(verdict 'r<=1.0' "$C_CRPE" "$C_CRANE") |"
echo "| cold export \`--artifacts none\` (crane's work: no signature looked for), wall time (s) — vs \`crane pull --format=oci\` | $(fmt "$C_NOART" 2) | $(fmt "$C_CRANE" 2) | $(ratio "$C_NOART" "$C_CRANE") | (info) | |"
echo "| cold export of ${NIMG} images, wall time (s) — vs \`skopeo copy … oci-archive:\` ×${NIMG} | $(fmt "$C_CRPE" 2) | $(fmt "$C_SKOPEO" 2) | $(ratio "$C_CRPE" "$C_SKOPEO") | ≤ 0.5× | $(verdict 'r<=0.5' "$C_CRPE" "$C_SKOPEO") |"
echo "| warm export \`--offline\`, archive MiB/s — vs \`cat\` of its blob files | $(fmt "$T_CRPE" 0) | $(fmt "$T_CAT" 0) | $(ratio "$T_CRPE" "$T_CAT") | ≥ 0.8× | $(verdict 'r>=0.8' "$T_CRPE" "$T_CAT") |"
echo "| warm export \`--offline\`, archive MiB/s — vs \`cat\` + \`sync FILE\` (what \`crpe export --fsync\` would add) | $(fmt "$T_CRPE" 0) | $(fmt "$T_CATSYNC" 0) | $(ratio "$T_CRPE" "$T_CATSYNC") | (info) | |"
echo "| warm export \`--offline\`, archive MiB/s — vs \`cat … \\| cat >file\` (read/write through user space, no fsync) | $(fmt "$T_CRPE" 0) | $(fmt "$T_CATPIPE" 0) | $(ratio "$T_CRPE" "$T_CATPIPE") | (info) | |"
echo "| peak total RSS, cold export (MiB) — vs crane | $(fmt "$R_CRPE" 1) | $(fmt "$R_CRANE" 1) | $(ratio "$R_CRPE" "$R_CRANE") | crpe ≤ 64 MiB | $(verdict 'v<=64' "$R_CRPE" 1) |"
echo "| peak RssAnon, heap + stacks, cold export (MiB) — vs crane | $(fmt "$A_CRPE" 1) | $(fmt "$A_CRANE" 1) | $(ratio "$A_CRPE" "$A_CRANE") | (info) | |"
echo "| peak total RSS, cold export (MiB) — vs skopeo (largest of its ${NIMG} runs) | $(fmt "$R_CRPE" 1) | $(fmt "$R_SKOPEO" 1) | $(ratio "$R_CRPE" "$R_SKOPEO") | crpe ≤ 64 MiB | $(verdict 'v<=64' "$R_CRPE" 1) |"
echo "| peak RssAnon, heap + stacks, cold export (MiB) — vs skopeo | $(fmt "$A_CRPE" 1) | $(fmt "$A_SKOPEO" 1) | $(ratio "$A_CRPE" "$A_SKOPEO") | (info) | |"
echo "| peak total RSS / RssAnon, warm export (MiB) — vs cold export | $(fmt "$R_WARM" 1) / $(fmt "$A_WARM" 1) | $(fmt "$R_CRPE" 1) / $(fmt "$A_CRPE" 1) | $(ratio "$R_WARM" "$R_CRPE") / $(ratio "$A_WARM" "$A_CRPE") | crpe ≤ 64 MiB | $(verdict 'v<=64' "$R_WARM" 1) |"
echo "| ${PULLERS} concurrent cold pulls of the ${BIG_MIB} MiB blob through one \`crpe serve\` (s) — vs 1 cold pull | $(fmt "$PN" 2) | $(fmt "$P1" 2) | $(ratio "$PN" "$P1") | ≤ 1.3× | $(verdict 'r<=1.3' "$PN" "$P1") |"
echo "| the same ${PULLERS} pulls once cached (same \`crpe serve\`, sendfile) (s) — reference: what the machine allows | $(fmt "$PN" 2) | $(fmt "$PNW" 2) | $(ratio "$PN" "$PNW") | (info) | |"
echo "| the same ${PULLERS} pulls straight from docker-registry, no crpe (s) — reference | $(fmt "$PN" 2) | $(fmt "$PND" 2) | $(ratio "$PN" "$PND") | (info) | |"
echo "| upstream GETs of that blob for the ${PULLERS} pulls (docker-registry access log, worst run) — vs 1 pull | $GN | $G1 | $(ratio "$GN" "$G1") | exactly 1 | $GETS_OK |"
echo "| \`crpe serve\` peak total RSS / RssAnon (MiB) — ${PULLERS} pulls vs 1 pull | $(fmt "$SN" 1) / $(fmt "$ASN" 1) | $(fmt "$S1" 1) / $(fmt "$AS1" 1) | $(ratio "$SN" "$S1") / $(ratio "$ASN" "$AS1") | (info) | |"
echo
echo "Cold export wall times, spread of the ${RUNS} runs (s): crpe ${SPREAD_CRPE}, crpe --artifacts none ${SPREAD_NOART}, crane ${SPREAD_CRANE}; every run: crpe${WALL[crpe]}; --artifacts none${WALL[crpe-noart]}; crane${WALL[crane]}."
echo
echo "Memory is the largest of the runs: peak total RSS (the kernel's high-water mark) and peak RssAnon (heap + stacks, the program's own; the rest is file-backed pages, mostly the mapped binary: crpe's peak RssFile was $(fmt "$F_CRPE" 1) MiB of a $(mib "$(stat -c %s "$CRPE_BIN")") MiB binary), /proc status sampled every 5 ms (\`imagefix watch\`, \`imagefix sample\` for \`crpe serve\`). \`cat\` (coreutils) copies in the kernel with copy_file_range; crpe reads each blob a megabyte at a time from its verified cache (a cold export follows each fetch as its bytes arrive and is verified by it), frames it in stored deflate blocks with a CRC-32 and writes them with one writev per megabyte; like cat, crane and skopeo it does not fsync the archive (\`--fsync\` does), while the cache it fills is fsynced. Archive / output sizes: crpe $(mib "${BYTES[crpe]}") MiB, crane layout $(mib "${BYTES[crane]}") MiB, skopeo archives $(mib "${BYTES[skopeo]}") MiB."
echo
echo "Reproduce: \`bash bench/export.sh\` (or \`bash bench/export.sh path/to/crpe\`; BENCH_RUNS, BENCH_BIG_MIB, BENCH_PULLERS tune it)."
