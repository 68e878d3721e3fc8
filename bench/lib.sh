# shellcheck shell=bash disable=SC2034 # its variables are the scripts' to use
# Shared pieces of the bench/*.sh benchmarks; each script sources it right
# after `set -euo pipefail`:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   bench_init crpe-bench-NAME 300   # env scrub, $TMP, EXIT trap, watchdog
#
# A script stops its own processes and removes its own extra files in an
# `on_exit` function, which the EXIT trap calls (when defined) before it
# stops the watchdog and removes $TMP.
#
# Everything here binds to and talks to 127.0.0.1 only, and every wait is
# bounded.
#
# Variables set here for the scripts: REPO_ROOT HOST DIST_BIN TMP CRPE_BIN
# DIST_PID DIST_PORT DIST_URL LOAD0 CLK_TCK SAMPLER_PID.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST=127.0.0.1
DIST_BIN="${DIST_BIN:-/usr/bin/docker-registry}"
TMP="" WATCHDOG=""

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------ set-up, exit --

# scrub_env REGEX: unset every variable whose name matches ^(REGEX)_
scrub_env() {
  local v
  while IFS= read -r v; do unset "$v"; done < <(env | awk -F= -v re="^($1)_" '$1 ~ re {print $1}')
}

# bench_init TMP_PREFIX DEFAULT_MAX_SECONDS: no proxies, no stray REGISTRY_*
# / CRPE_* settings, a temp dir $TMP, the EXIT trap, and a hard wall-clock
# cap of BENCH_MAX_SECONDS (default DEFAULT_MAX_SECONDS) for the whole script
bench_init() {
  # Never talk to anything but loopback, and never through a proxy.
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
  export NO_PROXY='*' no_proxy='*'
  # Don't let stray REGISTRY_* / CRPE_* env vars change the servers' config.
  scrub_env 'REGISTRY|CRPE'

  TMP="$(mktemp -d "/tmp/$1.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM

  # The watchdog kills us (which runs the trap) when the time is up.
  (
    sleep "${BENCH_MAX_SECONDS:-$2}" & sp=$!
    trap 'kill $sp 2>/dev/null; exit 0' TERM
    wait $sp && { log "time limit hit, aborting"; kill -TERM $$ 2>/dev/null; }
  ) &
  WATCHDOG=$!
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # called in a || list: a failing step inside does not end the clean-up
  if declare -F on_exit >/dev/null; then on_exit || true; fi
  stop_pid "$WATCHDOG"
  [ -z "$TMP" ] || rm -rf "$TMP"
  exit $rc
}

stop_pid() { # bounded: TERM, up to 5 s, then KILL; reap
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# require_x FILE HINT: FILE must be executable
require_x() { [ -x "$1" ] || die "$1 missing: $2"; }
# require_cmd CMD...: each must be on PATH
require_cmd() { local c; for c in "$@"; do command -v "$c" >/dev/null || die "$c missing"; done; }

# note_load: LOAD0 = the 1-minute load average now; warn when it is above
# the CPU count
note_load() {
  LOAD0="$(cut -d' ' -f1 /proc/loadavg)"
  if awk -v l="$LOAD0" -v n="$(nproc)" 'BEGIN{exit !(l > n)}'; then
    log "WARNING: load average $LOAD0 on $(nproc) CPUs: other work is running, figures will be noisy"
  fi
}

# skopeo (as root) keeps a blob-info cache in /var/lib/containers/cache:
# skopeo_cache_note (at start) notes what is there, skopeo_cache_clean (in
# on_exit) removes only what this run created.
SKOPEO_CACHE=/var/lib/containers/cache
SKOPEO_CACHE_BEFORE="" SKOPEO_CACHE_NOTED=0 SKOPEO_CACHE_DIR_EXISTED=0
skopeo_cache_note() {
  # shellcheck disable=SC2012 # names only, the cache's own
  SKOPEO_CACHE_BEFORE="$(ls -A "$SKOPEO_CACHE" 2>/dev/null | tr '\n' ' ' || true)"
  SKOPEO_CACHE_DIR_EXISTED=0; [ -d /var/lib/containers ] && SKOPEO_CACHE_DIR_EXISTED=1
  SKOPEO_CACHE_NOTED=1
}
skopeo_cache_clean() {
  local f
  [ "$SKOPEO_CACHE_NOTED" = 1 ] || return 0
  if [ "$(id -u)" = 0 ] && [ -d "$SKOPEO_CACHE" ]; then
    for f in "$SKOPEO_CACHE"/blob-info-cache-v1.*; do
      [ -e "$f" ] || continue
      case " $SKOPEO_CACHE_BEFORE " in *" $(basename "$f") "*) ;; *) rm -f "$f" ;; esac
    done
    if [ "$SKOPEO_CACHE_DIR_EXISTED" = 0 ]; then
      rmdir "$SKOPEO_CACHE" /var/lib/containers 2>/dev/null || true
    fi
  fi
}

# ------------------------------------------------------------------ build ---

# build_fix NAME [GO_VERSION]: build bench/NAME (std-lib only) as an isolated
# module, offline, into $TMP/NAME
build_fix() {
  local name=$1 src="$TMP/$1-src"
  log "building $name (std-lib only, isolated module)"
  mkdir -p "$src"
  cp "$REPO_ROOT/bench/$name/"*.go "$src/"
  printf 'module %s\n\ngo %s\n' "$name" "${2:-1.23}" >"$src/go.mod"
  ( cd "$src" && GOWORK=off GOFLAGS='' GOTOOLCHAIN=local GOPROXY=off \
      timeout 120 go build -o "$TMP/$name" . ) || die "$name build failed"
}

# build_crpe [BINARY] -> CRPE_BIN: BINARY when given, else ./cmd/crpe built
# as it ships (the Dockerfile's flags) into $TMP/crpe. CRPE_BUILD_HINT, when
# set, is added to the build failure's message.
build_crpe() {
  if [ $# -ge 1 ]; then
    CRPE_BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
  else
    log "building crpe as it ships (CGO_ENABLED=0 go build -trimpath -ldflags '-s -w')"
    ( cd "$REPO_ROOT" && CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=readonly timeout 300 \
        go build -trimpath -ldflags "-s -w" -o "$TMP/crpe" ./cmd/crpe ) \
      || die "crpe build failed${CRPE_BUILD_HINT:+ ($CRPE_BUILD_HINT)}"
    CRPE_BIN="$TMP/crpe"
  fi
  [ -x "$CRPE_BIN" ] || die "crpe binary $CRPE_BIN not executable"
}

# crpe_has_flags SUBCOMMAND FLAG...: `crpe SUBCOMMAND --help` lists each FLAG
# (as -flag or --flag, a whole word)
crpe_has_flags() {
  local sub=$1 help f; shift
  help="$("$CRPE_BIN" "$sub" --help 2>&1 || true)"
  for f in "$@"; do
    grep -qE -- "(^|[^a-z-])--?${f#--}([^a-z-]|$)" <<<"$help" || die "crpe $sub --help lacks $f"
  done
}

# --------------------------------------------------------------- network ---

# free_port: a port nothing listens on at $HOST, never one handed out before
# in this run (noted in $TMP, so that it holds across $(free_port) subshells)
free_port() {
  # below the kernel's ephemeral range: a port the clients' own connections
  # (16 pullers...) may take as their source port cannot be listened on
  local p used="$TMP/ports.used" lo
  lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$lo" -gt 12000 ] || lo=32768
  for _ in $(seq 1 50); do
    p=$(( 10000 + RANDOM % (lo - 10000) ))
    grep -qx "$p" "$used" 2>/dev/null && continue
    if ! (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then echo "$p" >>"$used"; echo "$p"; return 0; fi
  done
  die "no free port"
}

wait_http() { # url [seconds]
  local url=$1 t=${2:-20}
  for _ in $(seq 1 $(( t * 10 ))); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# rand_hex N: 2N hex digits from /dev/urandom
rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# dist_start ROOT [PORT] [ACCESS_LOG] -> DIST_PID, DIST_PORT, DIST_URL:
# registry_config ROOT ADDR ACCESSLOG_DISABLED: the configuration CNCF
# distribution (Debian's 2.8 and v3) runs with here: warn logs, filesystem
# storage in ROOT, blob descriptors cached in memory, no upload purging, no
# redirects, listening on ADDR
registry_config() {
  cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: $3
storage:
  filesystem:
    rootdirectory: $1
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: $2
  secret: bench-$(rand_hex 8)
EOF
}

# fixture_archive MIB -> PKG, ARCHIVE: bench/imagefix pushes library/{a,b,c}:1
# (MIB MiB of random gzip layers) into a fresh docker-registry, and crpe
# export writes them for $PLATFORM into $TMP/bench.kubepkg.tgz; the registry
# and the export's cache are gone afterwards
fixture_archive() {
  dist_start "$TMP/upstream"
  log "docker-registry (upstream) on $DIST_URL; pushing library/{a,b,c}:1 ($1 MiB of random gzip layers)"
  PKG="$TMP/pkg.json"
  local fix
  fix="$(timeout 180 "$TMP/imagefix" import -registry "$DIST_URL" -pkg "$PKG" -tmp "$TMP" -mib "$1")" \
    || die "fixture push failed"
  log "fixtures pushed: $fix"
  # a script may change the upstream before the export (bench/signatures.sh
  # signs the images)
  if declare -F fixture_before_export >/dev/null; then fixture_before_export; fi
  ARCHIVE="$TMP/bench.kubepkg.tgz"
  timeout 180 "$CRPE_BIN" export -f "$PKG" -o "$ARCHIVE" --data "$TMP/export-cache" --platform "$PLATFORM" \
    --registry-endpoint "docker.io=$DIST_URL" --json >"$TMP/export.json" 2>"$TMP/export.err" \
    || { tail -20 "$TMP/export.err" >&2; die "crpe export failed"; }
  rm -rf "$TMP/export-cache"
  stop_pid "$DIST_PID"; DIST_PID=""; rm -rf "$TMP/upstream"
}

# docker-registry ($DIST_BIN) with filesystem storage in ROOT and its config
# in ROOT.yml, on $HOST:PORT (a fresh free port when PORT is empty). With
# ACCESS_LOG, the access log (combined format, on its stdout) goes there;
# everything else is appended to $TMP/dist.log.
dist_start() {
  local root=$1 access=${3:-} disabled=true
  [ -z "$access" ] || disabled=false
  DIST_PORT=${2:-$(free_port)}
  DIST_URL="http://$HOST:$DIST_PORT"
  mkdir -p "$root"
  registry_config "$root" "$HOST:$DIST_PORT" "$disabled" >"$root.yml"
  if [ -n "$access" ]; then
    "$DIST_BIN" serve "$root.yml" >>"$access" 2>>"$TMP/dist.log" &
  else
    "$DIST_BIN" serve "$root.yml" >>"$TMP/dist.log" 2>&1 &
  fi
  DIST_PID=$!
  wait_http "$DIST_URL/v2/" 20 || { tail -20 "$TMP/dist.log" >&2; die "docker-registry did not start"; }
}

# -------------------------------------------------------------- measuring ---

now() { echo "$EPOCHREALTIME"; }
# settle: flush dirty pages before a timed step, so that no run pays for the
# writeback left by the previous one, then prefault (bounded; never fails the
# run)
settle() { timeout 60 sync || true; prefault; }

# prefault: touch and free BENCH_PREFAULT_MIB (default 1024; 0: off) of memory
# in /dev/shm right before a timed step, so every tool starts with the same
# memory at hand. On a VM whose balloon reports free pages to the host (this
# machine: Firecracker, virtio-balloon free page reporting), memory left free
# for about 2 s is handed back, and the first touch of each page afterwards
# costs the host's fault: here a 600 MiB write took 0.10 s of system time
# with recycled pages and 1.05 s after a 4 s pause. Without this, a step's
# time depended on how much its predecessor had just freed: whoever followed
# a big `rm -rf` got warm pages, the others paid up to ~1.7 ms per MiB they
# wrote into the page cache.
prefault() {
  local mib=${BENCH_PREFAULT_MIB:-1024} f
  [ "$mib" -gt 0 ] && [ -d /dev/shm ] && [ -w /dev/shm ] || return 0
  f=$(mktemp /dev/shm/crpe-bench-prefault.XXXXXX) || return 0
  timeout 30 dd if=/dev/zero of="$f" bs=1M count="$mib" status=none 2>/dev/null || true
  rm -f "$f"
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }

# tv TIMEFILE SECONDS cmd...: run under /usr/bin/time -v with a timeout
tv() {
  local tf=$1 t=$2; shift 2
  timeout "$t" /usr/bin/time -v -o "$tf" "$@"
}
# rss_of TIMEFILE -> peak RSS in MiB from /usr/bin/time -v
rss_of() { awk -F': *' '/Maximum resident set size/{printf "%.1f", $2/1024}' "$1"; }

# Memory is reported as peak total RSS and peak RssAnon (heap + stacks):
# file-backed pages (RssFile: the mapped binary) move with the page cache.
# bench/imagefix (build_fix imagefix -> $TMP/imagefix) reads /proc/PID/status
# every 5 ms and writes the peaks as one JSON line (see its package comment):
#   tw JSON SECONDS cmd...   run cmd under `imagefix watch` with a timeout;
#                            JSON: peak_rss_kib, rss_anon_kib, rss_file_kib,
#                            user_s, sys_s (the command's own)
#   sample_start PID JSON    sample a running server -> SAMPLER_PID
#   sample_stop SAMPLER_PID  stop it (it samples once more, writes JSON)
tw() {
  local j=$1 t=$2; shift 2
  timeout "$t" "$TMP/imagefix" watch -o "$j" -- "$@"
}
sample_start() {
  "$TMP/imagefix" sample -p "$1" -o "$2" &
  SAMPLER_PID=$!
}
sample_stop() { # bounded (stop_pid); the JSON must be there afterwards
  stop_pid "$1"
}
# jnum JSON KEY: a number of imagefix's JSON line
jnum() { sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" "$1"; }
# jmib JSON KEY: a KiB figure of it in MiB (one decimal); dies when missing
jmib() {
  local v; v=$(jnum "$1" "$2")
  [ -n "$v" ] || die "no $2 in $1: $(head -c 300 "$1" 2>/dev/null)"
  kib_mib "$v"
}
# jcpu JSON: user + system seconds of a watched command
jcpu() { awk -v u="$(jnum "$1" user_s)" -v s="$(jnum "$1" sys_s)" 'BEGIN{printf "%.2f", u+s}'; }

# status_kib PID FIELD: a field of /proc/PID/status (VmHWM, VmRSS, RssAnon,
# RssFile...) in KiB
status_kib() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status"; }
vm_hwm_kib() { status_kib "$1" VmHWM; }

cpu_ticks() { # pid -> utime+stime in clock ticks
  # fields after the ")" that closes comm: state is $1, utime is $12, stime $13
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
CLK_TCK="$(getconf CLK_TCK)"

# ------------------------------------------------------------- reporting ---

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n1; }
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN{ printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || b+0==0) print "n/a"; else printf "%.2f×", a/b }'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
kib_mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
mibps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.1f", b/1048576/s}'; }

verdict() { # expr over r (ratio) or v (crpe value)
  awk -v a="$2" -v b="$3" "BEGIN{ if (a==\"\" || b==\"\" || b+0==0) { print \"–\"; exit } r=a/b; v=a; print (($1) ? \"✅\" : \"❌\") }"
}

# ----------------------------------------------------------------- floors ---
# What the machine allows for the bytes of FILE, measured in the same run as
# the figures (issue 16), each into FLOOR[<kind>] (seconds, one value per
# call; median them at the end):
#   hash   openssl dgst -sha256 FILE (SHA-NI where the CPU has it)
#   write  cp FILE DIR/copy && sync -f DIR/copy: writing the bytes durably
#   read   cat DIR/copy > /dev/null: reading them back (page cache)
#   net    curl of FILE from `imagefix serve` (net/http: sendfile) over
#          loopback to /dev/null: moving them once between processes
# floor_start FILE starts the server (needs build_fix imagefix); floors R DIR
# measures all four once. The floor of an import is the slower of hash and
# write: every byte must be hashed and written durably.
declare -A FLOOR
FLOOR_PID="" FLOOR_URL=""
floor_start() {
  local f=$1 out="$TMP/floor-serve.addr"
  "$TMP/imagefix" serve -file "$f" >"$out" 2>>"$TMP/floor-serve.log" &
  FLOOR_PID=$!
  local i
  for i in $(seq 1 100); do [ -s "$out" ] && break; sleep 0.05; done
  FLOOR_URL="http://$(head -1 "$out")/"
  wait_http "$FLOOR_URL" 10 || die "imagefix serve did not start"
}
floors() { # r dir file
  local r=$1 dir=$2 f=$3 t0 t1 w
  mkdir -p "$dir"
  settle
  t0=$(now); timeout 60 openssl dgst -sha256 "$f" >/dev/null; t1=$(now)
  w=$(elapsed "$t0" "$t1"); FLOOR[hash]+=" $w"
  settle
  t0=$(now); timeout 120 cp "$f" "$dir/copy" && timeout 120 sync -f "$dir/copy"; t1=$(now)
  w=$(elapsed "$t0" "$t1"); FLOOR[write]+=" $w"
  t0=$(now); timeout 60 cat "$dir/copy" >/dev/null; t1=$(now)
  w=$(elapsed "$t0" "$t1"); FLOOR[read]+=" $w"
  rm -f "$dir/copy"
  t0=$(now); timeout 60 curl -sS --fail -o /dev/null "$FLOOR_URL"; t1=$(now)
  w=$(elapsed "$t0" "$t1"); FLOOR[net]+=" $w"
  log "run $r floors: hash $(echo "${FLOOR[hash]}" | awk '{print $NF}') s, write+sync $(echo "${FLOOR[write]}" | awk '{print $NF}') s, read $(echo "${FLOOR[read]}" | awk '{print $NF}') s, loopback $(echo "${FLOOR[net]}" | awk '{print $NF}') s"
}
# floor_pulls N BYTES: the loopback floor of N concurrent pulls: N curls of
# FLOOR_URL at once (separate processes, as N clients), each to /dev/null and
# each required to fetch BYTES; the wall time from starting the first to the
# last one's end (curl's start-up included: a few ms) -> FLOOR[pulls]. The
# curls' pids are in FLOOR_CURLS while they run (for a script's on_exit).
FLOOR_CURLS=""
floor_pulls() { # n bytes
  local n=$1 want=$2 t0 t1 i p rc=0 got
  t0=$(now)
  for i in $(seq 1 "$n"); do
    timeout 120 curl -sS --fail -o /dev/null -w '%{size_download}' "$FLOOR_URL" >"$TMP/floor-pull.$i" &
    FLOOR_CURLS+=" $!"
  done
  for p in $FLOOR_CURLS; do wait "$p" || rc=1; done
  t1=$(now)
  FLOOR_CURLS=""
  [ "$rc" = 0 ] || die "floor: a curl of $FLOOR_URL failed"
  for i in $(seq 1 "$n"); do
    got=$(cat "$TMP/floor-pull.$i"); rm -f "$TMP/floor-pull.$i"
    [ "$got" = "$want" ] || die "floor: curl $i fetched $got bytes, want $want"
  done
  FLOOR[pulls]+=" $(elapsed "$t0" "$t1")"
}
# floor_of KIND -> median seconds; floor_import -> the slower of hash and write
floor_of() { # shellcheck disable=SC2086
  median ${FLOOR[$1]}; }
floor_import() { awk -v a="$(floor_of hash)" -v b="$(floor_of write)" 'BEGIN{print (a>b)?a:b}'; }

# growth_and_data TSV: for a TSV whose columns 1-3 are size, step and
# seconds (bench/scale*.sh), prints each step's growth between consecutive
# sizes (time ratio over size ratio: 1.00 is linear), then the TSV itself
growth_and_data() {
  echo "Growth between sizes (time ratio / size ratio; 1.00 is linear, below 1 is better than linear):"
  awk -F'\t' 'NR>1 { t[$2","$1]=$3; if (!($1 in seen)) { seen[$1]=1; ns[++k]=$1 } ; steps[$2]=1 }
    END { for (s in steps) { line=s ":"; for (i=2;i<=k;i++) { a=t[s","ns[i-1]]; b=t[s","ns[i]]; if (a>0) line=line sprintf(" %s→%s %.2f", ns[i-1], ns[i], (b/a)/(ns[i]/ns[i-1])) } print "- " line } }' "$1" | sort
  echo
  echo "Data (TSV):"
  sed 's/^/    /' "$1"
}
