#!/usr/bin/env bash
# Benchmark `crpe apply` and `crpe operator` against `kubectl apply
# --server-side` on a real API server (etcd + kube-apiserver, no nodes),
# started by the script on loopback only.
#
# usage: bench/operator.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built as it ships (the Dockerfile's flags):
#   `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" ./cmd/crpe`.
#   BENCH_RUNS=3            repetitions per measurement (median reported)
#   BENCH_PKGS=200          KubePkgs for the operator's RSS (2 ConfigMaps each)
#   BENCH_STEP_SECONDS=45   bound of one timed apply of the 500 manifests (crpe
#                           apply, kubectl, or through the operator): a run that
#                           hits it is reported as a lower bound (with how many
#                           objects it applied) and not repeated
#   BENCH_PKGS_SECONDS=60   bound of the wait for the BENCH_PKGS packages (and of
#                           their deletion)
#   BENCH_MAX_SECONDS=300   hard wall-clock cap for the whole script
#   KUBE_APISERVER, KUBECTL default to $(go env GOPATH)/bin/{kube-apiserver,kubectl}
#                           (built by test/peers/kube.sh); ETCD to /usr/bin/etcd
#
# The control plane: etcd (data on /dev/shm when there is one: etcd 3.4 has
# no --unsafe-no-fsync, and both tools talk to the same API server) and
# kube-apiserver with --bind-address=127.0.0.1, a token file with an admin in
# system:masters, RBAC, a service-account key made by openssl, and
# --service-cluster-ip-range=10.96.0.0/16 (an allocation range only: no
# traffic goes there). No controller-manager, no scheduler, no nodes.
#
# Measures, `sync` before every timed step, a fresh namespace every time:
#   1. operator RSS: a fresh `crpe operator`, BENCH_PKGS KubePkgs (2
#      ConfigMaps each) applied with one `kubectl apply`; the operator's
#      VmHWM once all show Applied=True (then they are deleted through the
#      operator's finalizer, and it is stopped; what is left is purged)
#   2. 500 manifests (200 ConfigMaps, 200 Secrets, 100 Services), median of
#      BENCH_RUNS interleaved runs (the order rotates) of three ways to apply
#      them: `crpe apply -f pkg.json`; `kubectl apply --server-side -f
#      objects.yaml -n NS` of the same objects (kubectl with its discovery
#      cache in the temp dir, warmed up first); and the same package through
#      a `crpe operator` (started and warmed up with a one-object package
#      before the runs, untimed): from `kubectl apply --server-side` of the
#      KubePkg until status.conditions Applied=True, which bench/operatorfix
#      watches (one LIST, then a watch, with the admin token: polling would
#      have the API server encode the half-megabyte KubePkg again at every
#      poll, on the CPUs being measured); after each crpe apply and kubectl
#      run, the same apply again, untimed in the table's first rows: its
#      requests and writes on the objects (what a resync costs)
#
# Everything binds to 127.0.0.1, every step is time-bounded, and an EXIT trap
# stops the processes and removes the temp dirs. Typical run time: ~2–4 min.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${BENCH_RUNS:-3}"
NPKGS="${BENCH_PKGS:-200}"
STEP_SECONDS="${BENCH_STEP_SECONDS:-45}"
PKGS_SECONDS="${BENCH_PKGS_SECONDS:-60}"
GOBIN_DIR="$(go env GOPATH 2>/dev/null)/bin"
ETCD="${ETCD:-/usr/bin/etcd}"
KUBE_APISERVER="${KUBE_APISERVER:-$GOBIN_DIR/kube-apiserver}"
KUBECTL_BIN="${KUBECTL:-$GOBIN_DIR/kubectl}"
N_CM=200 N_SECRET=200 N_SVC=100
N_OBJ=$(( N_CM + N_SECRET + N_SVC ))

ETCD_PID="" API_PID="" OP_PID="" ETCD_DIR=""
on_exit() {
  local p
  stop_pid "$OP_PID"
  # SIGKILL: a terminated API server waits on etcd and its own graceful
  # shutdown; nothing here needs to outlive the run
  for p in $API_PID $ETCD_PID; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ -z "$ETCD_DIR" ] || rm -rf "$ETCD_DIR"
}
bench_init crpe-bench-operator 300
# Don't let stray ETCD_* / KUBECONFIG env vars change the set-up either.
scrub_env ETCD
unset KUBECONFIG
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  ETCD_DIR="$(mktemp -d /dev/shm/crpe-bench-etcd.XXXXXX)"
else
  ETCD_DIR="$TMP/etcd"; mkdir -p "$ETCD_DIR"
fi

require_x "$ETCD" "apt-get install -y etcd-server"
require_x "$KUBE_APISERVER" "bash test/peers/kube.sh"
require_x "$KUBECTL_BIN" "bash test/peers/kube.sh"
require_cmd curl go openssl
note_load

json_num() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

# ------------------------------------------------------------------ build ---

build_fix operatorfix
FIX="$TMP/operatorfix"
build_crpe "$@"
crpe_has_flags apply --file --kubeconfig --json
crpe_has_flags operator --kubeconfig --health-addr

# ---------------------------------------------------------- control plane ---

log "starting etcd ($("$ETCD" --version | head -1)), data in $ETCD_DIR"
ETCD_URL="http://$HOST:$(free_port)"
ETCD_PEER="http://$HOST:$(free_port)"
"$ETCD" --name crpe-bench --data-dir "$ETCD_DIR/data" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
  --initial-cluster "crpe-bench=$ETCD_PEER" --initial-cluster-state new \
  --logger zap --log-level warn >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
for i in $(seq 1 300); do
  curl -fsS --max-time 1 "$ETCD_URL/health" 2>/dev/null | grep -q '"true"' && break
  kill -0 "$ETCD_PID" 2>/dev/null || { tail -20 "$TMP/etcd.log" >&2; die "etcd exited"; }
  [ "$i" = 300 ] && { tail -20 "$TMP/etcd.log" >&2; die "etcd not healthy"; }
  sleep 0.1
done

ADMIN_TOKEN="$(rand_hex 16)"
printf '%s,admin,admin,"system:masters"\n' "$ADMIN_TOKEN" >"$TMP/tokens.csv"
chmod 600 "$TMP/tokens.csv"
openssl genrsa -out "$TMP/sa.key" 2048 2>/dev/null || die "openssl genrsa failed"
API_PORT=$(free_port)
API_URL="https://$HOST:$API_PORT"
CERT_DIR="$TMP/certs"
KUBE_VERSION="$(basename "$(readlink -f "$KUBE_APISERVER")" | sed 's/^kube-apiserver-//')"
log "starting kube-apiserver ($KUBE_VERSION) on $API_URL"
"$KUBE_APISERVER" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --etcd-servers="$ETCD_URL" --cert-dir="$CERT_DIR" \
  --token-auth-file="$TMP/tokens.csv" --authorization-mode=RBAC --anonymous-auth=false \
  --service-account-key-file="$TMP/sa.key" --service-account-signing-key-file="$TMP/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/16 \
  --endpoint-reconciler-type=none --profiling=false >"$TMP/kube-apiserver.log" 2>&1 &
API_PID=$!
# it writes its self-signed serving certificate before it listens
CA="$CERT_DIR/apiserver.crt"
for i in $(seq 1 600); do
  grep -q 'END CERTIFICATE' "$CA" 2>/dev/null && break
  kill -0 "$API_PID" 2>/dev/null || { tail -20 "$TMP/kube-apiserver.log" >&2; die "kube-apiserver exited"; }
  [ "$i" = 600 ] && die "kube-apiserver wrote no certificate"
  sleep 0.1
done
KCFG="$TMP/kubeconfig"
cat >"$KCFG" <<EOF
apiVersion: "v1"
kind: "Config"
clusters:
  - name: "bench"
    cluster:
      server: "$API_URL"
      certificate-authority-data: "$(base64 -w0 <"$CA")"
users:
  - name: "admin"
    user:
      token: "$ADMIN_TOKEN"
contexts:
  - name: "bench"
    context: {cluster: "bench", user: "admin", namespace: "default"}
current-context: "bench"
EOF
chmod 600 "$KCFG"
api() { curl -sS --max-time 10 --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" "$@"; }
for i in $(seq 1 600); do
  if [ "$(api "$API_URL/readyz" 2>/dev/null)" = ok ] \
    && [ "$(api -o /dev/null -w '%{http_code}' "$API_URL/api/v1/namespaces/default" 2>/dev/null)" = 200 ]; then break; fi
  kill -0 "$API_PID" 2>/dev/null || { tail -20 "$TMP/kube-apiserver.log" >&2; die "kube-apiserver exited"; }
  [ "$i" = 600 ] && { api "$API_URL/readyz?verbose" >&2 || true; die "kube-apiserver not ready"; }
  sleep 0.1
done
log "control plane ready"

kubectl() { timeout 120 "$KUBECTL_BIN" --kubeconfig "$KCFG" --cache-dir "$TMP/kube-cache" "$@"; }
new_ns() { kubectl create namespace "$1" >/dev/null || die "create namespace $1 failed"; }
# requests the API server has served on ConfigMaps, Secrets and Services so
# far (its apiserver_request_total counter: every verb, dry runs included)
obj_requests() {
  api "$API_URL/metrics" | awk '/^apiserver_request_total[{]/ && /resource="(configmaps|secrets|services)"/ {s+=$NF} END{printf "%d", s}'
}
# of which writes (applies, patches, creates, updates, deletes; dry runs
# left out)
obj_writes() {
  api "$API_URL/metrics" | awk '/^apiserver_request_total[{]/ && /resource="(configmaps|secrets|services)"/ && /verb="(APPLY|PATCH|POST|PUT|DELETE)"/ && !/dry_run="All"/ {s+=$NF} END{printf "%d", s}'
}
count_objs() { # ns [label selector] -> number of ConfigMaps + Secrets + Services
  kubectl get configmaps,secrets,services -n "$1" ${2:+-l "$2"} -o name | grep -c . || true
}
wait_pkgs() { # ns name|"" want seconds -> prints operatorfix's JSON line
  "$FIX" wait -server "$API_URL" -ca "$CA" -token "$ADMIN_TOKEN" -ns "$1" ${2:+-name "$2"} \
    -want "$3" -timeout "${4}s" 2>>"$TMP/operatorfix.err"
}

start_operator() { # log -> OP_PID
  "$CRPE_BIN" operator --kubeconfig "$KCFG" --health-addr 0 --log-format json >"$1" 2>&1 &
  OP_PID=$!
  # warm-up: the CRD installed, caches synced, one package applied
  local ns="warm-$RANDOM" out
  for i in $(seq 1 300); do
    api -o /dev/null -w '%{http_code}' "$API_URL/apis/octohelm.tech/v1alpha1/kubepkgs" 2>/dev/null | grep -q 200 && break
    kill -0 "$OP_PID" 2>/dev/null || { tail -20 "$1" >&2; die "crpe operator exited"; }
    [ "$i" = 300 ] && { tail -20 "$1" >&2; die "KubePkg CRD not served"; }
    sleep 0.1
  done
  new_ns "$ns"
  "$FIX" pkg -ns "$ns" -name warm -cm 1 -secret 0 -svc 0 -pkg "$TMP/warm.json"
  kubectl apply --server-side -f "$TMP/warm.json" >/dev/null || die "kubectl apply of the warm-up KubePkg failed"
  out=$(wait_pkgs "$ns" warm 1 60) || { tail -20 "$1" >&2; die "operator warm-up: $out"; }
}

# ------------------------------------------------- 1. operator RSS, N pkgs ---

log "phase 1: a fresh crpe operator, $NPKGS KubePkgs of 2 ConfigMaps each"
start_operator "$TMP/operator-rss.log"
RSS_START=$(kib_mib "$(status_kib "$OP_PID" VmRSS)")
new_ns many
"$FIX" many -ns many -n "$NPKGS" -cm 2 -o "$TMP/many.yaml"
settle
t0=$(now)
kubectl apply --server-side -f "$TMP/many.yaml" >/dev/null || die "kubectl apply of $NPKGS KubePkgs failed"
MANY_DONE=1
out=$(wait_pkgs many "" "$NPKGS" "$PKGS_SECONDS") || MANY_DONE=0
t1=$(now)
MANY_WALL=$(elapsed "$t0" "$t1")
MANY_APPLIED=$(json_num "$out" applied)
[ "$MANY_DONE" = 1 ] && sleep 1 # let the last status writes and events settle
kill -0 "$OP_PID" 2>/dev/null || { tail -20 "$TMP/operator-rss.log" >&2; die "crpe operator exited"; }
MANY_HWM=$(kib_mib "$(status_kib "$OP_PID" VmHWM)")
MANY_RSS=$(kib_mib "$(status_kib "$OP_PID" VmRSS)")
MANY_ANON=$(kib_mib "$(status_kib "$OP_PID" RssAnon)")
MANY_FILE=$(kib_mib "$(status_kib "$OP_PID" RssFile)")
DEL_WALL=""
if [ "$MANY_DONE" = 1 ]; then
  n=$(count_objs many app.kubernetes.io/managed-by=crpe)
  [ "$n" = $(( NPKGS * 2 )) ] || die "expected $(( NPKGS * 2 )) ConfigMaps applied by the operator, found $n"
  log "$NPKGS KubePkgs applied in $MANY_WALL s; operator VmHWM $MANY_HWM MiB (now RSS $MANY_RSS MiB: anon $MANY_ANON, file $MANY_FILE; at start $RSS_START)"
  # delete them through the finalizer (which deletes their ConfigMaps),
  # bounded; kubectl's own --wait waits object by object (~0.2 s each), so
  # the end is polled instead
  settle
  t0=$(now)
  kubectl delete kubepkgs --all -n many --wait=false >/dev/null || die "kubectl delete of the $NPKGS KubePkgs failed"
  if out=$("$FIX" wait -server "$API_URL" -ca "$CA" -token "$ADMIN_TOKEN" -ns many -gone -timeout "${PKGS_SECONDS}s" \
    2>>"$TMP/operatorfix.err"); then
    t1=$(now); DEL_WALL=$(elapsed "$t0" "$t1")
    log "$NPKGS KubePkgs deleted through the finalizer in $DEL_WALL s ($(count_objs many app.kubernetes.io/managed-by=crpe) ConfigMaps left)"
  else
    log "WARNING: deleting the $NPKGS KubePkgs through the finalizer took over ${PKGS_SECONDS} s: $out"
  fi
else
  log "WARNING: only ${MANY_APPLIED:-?} of $NPKGS KubePkgs Applied=True after $MANY_WALL s: $out"
  log "operator VmHWM so far $MANY_HWM MiB (RSS $MANY_RSS MiB: anon $MANY_ANON, file $MANY_FILE; at start $RSS_START)"
fi
stop_pid "$OP_PID"; OP_PID=""
"$FIX" purge -server "$API_URL" -ca "$CA" -token "$ADMIN_TOKEN" -ns many >/dev/null || die "purging the KubePkgs of many failed"

# ------------------------------------------- 2. crpe apply vs kubectl SSA ---

log "phase 2: $N_OBJ manifests ($N_CM ConfigMaps, $N_SECRET Secrets, $N_SVC Services): crpe apply, kubectl apply --server-side and crpe operator, interleaved"
declare -A WALL RSS PARTIAL REQS RE_REQS RE_WRITES RE_WALL
# warm-up (untimed): kubectl's discovery cache, the API server's first writes
new_ns warm-direct
"$FIX" pkg -ns warm-direct -name scale -cm 1 -secret 1 -svc 1 -pkg "$TMP/warm-direct.json" -yaml "$TMP/warm-direct.yaml"
kubectl apply --server-side -n warm-direct -f "$TMP/warm-direct.yaml" >/dev/null || die "kubectl warm-up failed"
timeout 60 "$CRPE_BIN" apply -f "$TMP/warm-direct.json" --kubeconfig "$KCFG" --json >/dev/null 2>"$TMP/warm-direct.err" \
  || { tail -20 "$TMP/warm-direct.err" >&2; die "crpe apply warm-up failed"; }

# partial TOOL RUN NS SECONDS SELECTOR: a run that hit its time bound: how
# far it got, and no further runs of TOOL
partial() {
  local n; n=$(count_objs "$3" "$5")
  PARTIAL[$1]="$n $4"
  log "WARNING: run $2 $1: only $n of $N_OBJ objects applied after $4 s (~$(awk -v n="$n" -v s="$4" 'BEGIN{printf "%.1f", n/s}') objects/s); no further $1 runs"
}

run_direct() { # tool run
  local tool=$1 r=$2 ns="$1-$2" t0 t1 w n rc=0
  [ -z "${PARTIAL[$tool]:-}" ] || return 0
  new_ns "$ns"
  "$FIX" pkg -ns "$ns" -name scale -cm "$N_CM" -secret "$N_SECRET" -svc "$N_SVC" -pkg "$TMP/$ns.json" -yaml "$TMP/$ns.yaml"
  local q0 q1; q0=$(obj_requests)
  settle
  case $tool in
    crpe)
      t0=$(now)
      timeout "$STEP_SECONDS" /usr/bin/time -v -o "$TMP/$ns.time" "$CRPE_BIN" apply -f "$TMP/$ns.json" --kubeconfig "$KCFG" --json \
        >"$TMP/$ns.out" 2>"$TMP/$ns.err" || rc=$?
      t1=$(now)
      [ "$rc" = 124 ] && { partial crpe "$r" "$ns" "$STEP_SECONDS" app.kubernetes.io/managed-by=crpe; return 0; }
      [ "$rc" = 0 ] || { tail -20 "$TMP/$ns.err" >&2; die "crpe apply run $r failed"; }
      grep -q '"failed"' "$TMP/$ns.out" && die "crpe apply run $r: objects refused: $(head -c 600 "$TMP/$ns.out")"
      ;;
    kubectl)
      t0=$(now)
      timeout "$STEP_SECONDS" /usr/bin/time -v -o "$TMP/$ns.time" "$KUBECTL_BIN" --kubeconfig "$KCFG" --cache-dir "$TMP/kube-cache" \
        apply --server-side -n "$ns" -f "$TMP/$ns.yaml" >"$TMP/$ns.out" 2>"$TMP/$ns.err" || rc=$?
      t1=$(now)
      [ "$rc" = 124 ] && { partial kubectl "$r" "$ns" "$STEP_SECONDS" app=bench; return 0; }
      [ "$rc" = 0 ] || { tail -20 "$TMP/$ns.err" >&2; die "kubectl apply run $r failed"; }
      ;;
  esac
  q1=$(obj_requests)
  n=$(count_objs "$ns" app=bench)
  [ "$n" = "$N_OBJ" ] || die "$tool run $r: $n objects in $ns, expected $N_OBJ"
  w=$(elapsed "$t0" "$t1")
  WALL[$tool]+=" $w"; RSS[$tool]+=" $(rss_of "$TMP/$ns.time")"; REQS[$tool]+=" $(( q1 - q0 ))"
  log "run $r $tool: $N_OBJ objects in $w s ($(awk -v n="$N_OBJ" -v s="$w" 'BEGIN{printf "%.0f", n/s}') objects/s), $(( q1 - q0 )) API requests on them, peak RSS $(rss_of "$TMP/$ns.time") MiB"
  # the same apply again, nothing changed (what a resync costs)
  local w0 w1; q0=$(obj_requests); w0=$(obj_writes)
  settle
  t0=$(now)
  case $tool in
    crpe)
      timeout "$STEP_SECONDS" "$CRPE_BIN" apply -f "$TMP/$ns.json" --kubeconfig "$KCFG" --json >"$TMP/$ns.out" 2>"$TMP/$ns.err" \
        || { tail -20 "$TMP/$ns.err" >&2; die "crpe re-apply run $r failed"; }
      n=$(grep -c '"action": "unchanged"' "$TMP/$ns.out" || true)
      [ "$n" = "$N_OBJ" ] || die "crpe re-apply run $r: $n of $N_OBJ objects unchanged"
      ;;
    kubectl)
      timeout "$STEP_SECONDS" "$KUBECTL_BIN" --kubeconfig "$KCFG" --cache-dir "$TMP/kube-cache" \
        apply --server-side -n "$ns" -f "$TMP/$ns.yaml" >"$TMP/$ns.out" 2>"$TMP/$ns.err" \
        || { tail -20 "$TMP/$ns.err" >&2; die "kubectl re-apply run $r failed"; }
      ;;
  esac
  t1=$(now)
  q1=$(obj_requests); w1=$(obj_writes)
  RE_REQS[$tool]+=" $(( q1 - q0 ))"; RE_WRITES[$tool]+=" $(( w1 - w0 ))"; RE_WALL[$tool]+=" $(elapsed "$t0" "$t1")"
  log "run $r $tool re-apply (nothing changed): $(elapsed "$t0" "$t1") s, $(( q1 - q0 )) API requests on the objects, $(( w1 - w0 )) of them writes"
  rm -f "$TMP/$ns.json" "$TMP/$ns.yaml"
}

# the same package through a crpe operator started (and warmed up) before
# the runs, so that its runs share the load of the moment with the others
start_operator "$TMP/operator.log"
run_operator() { # run
  local r=$1 ns="op-$1" t0 t1 w out n
  [ -z "${PARTIAL[operator]:-}" ] || return 0
  new_ns "$ns"
  "$FIX" pkg -ns "$ns" -name scale -cm "$N_CM" -secret "$N_SECRET" -svc "$N_SVC" -pkg "$TMP/$ns.json"
  local q0 q1; q0=$(obj_requests)
  settle
  t0=$(now)
  kubectl apply --server-side -f "$TMP/$ns.json" >/dev/null || die "kubectl apply of the KubePkg (run $r) failed"
  if ! out=$(wait_pkgs "$ns" scale 1 "$STEP_SECONDS"); then
    kill -0 "$OP_PID" 2>/dev/null || { tail -20 "$TMP/operator.log" >&2; die "crpe operator exited"; }
    grep -q '"pending"' <<<"$out" || die "operator run $r: $out"
    partial operator "$r" "$ns" "$STEP_SECONDS" "octohelm.tech/kubepkg=$ns.scale"
    return 0
  fi
  t1=$(now)
  q1=$(obj_requests)
  n=$(count_objs "$ns" "octohelm.tech/kubepkg=$ns.scale")
  [ "$n" = "$N_OBJ" ] || die "operator run $r: $n objects in $ns, expected $N_OBJ"
  w=$(elapsed "$t0" "$t1")
  WALL[operator]+=" $w"; REQS[operator]+=" $(( q1 - q0 ))"
  log "run $r operator: $N_OBJ objects applied (Applied=True) in $w s, $(( q1 - q0 )) API requests on them"
}
for r in $(seq 1 "$RUNS"); do
  case $(( r % 3 )) in
    1) run_direct crpe "$r"; run_direct kubectl "$r"; run_operator "$r" ;;
    2) run_direct kubectl "$r"; run_operator "$r"; run_direct crpe "$r" ;;
    0) run_operator "$r"; run_direct crpe "$r"; run_direct kubectl "$r" ;;
  esac
done
OP_HWM=$(kib_mib "$(status_kib "$OP_PID" VmHWM)")
OP_ANON=$(kib_mib "$(status_kib "$OP_PID" RssAnon)"); OP_FILE=$(kib_mib "$(status_kib "$OP_PID" RssFile)")
log "operator VmHWM after the $N_OBJ-manifest packages: $OP_HWM MiB (now RssAnon $OP_ANON MiB, RssFile $OP_FILE MiB)"
stop_pid "$OP_PID"; OP_PID=""

# ------------------------------------------------------------------ report --

# med TOOL: the median wall time, or "> S" when the only run hit its bound
med() {
  # shellcheck disable=SC2086
  if [ -n "${WALL[$1]:-}" ]; then median ${WALL[$1]}; fi
}
# shellcheck disable=SC2086 # PARTIAL[tool] is "N S": two words
shown() { # tool decimals: the median, or "> S s (N of 500)" for a partial run
  if [ -n "${WALL[$1]:-}" ]; then fmt "$(med "$1")" "$2"
  elif [ -n "${PARTIAL[$1]:-}" ]; then set -- ${PARTIAL[$1]}; echo "> $2 (only $1 of $N_OBJ applied)"
  else echo "n/a"; fi
}
# shellcheck disable=SC2086 # PARTIAL[tool] is "N S": two words
ratio_of() { # tool peer
  local a b
  a=$(med "$1"); b=$(med "$2")
  if [ -n "$a" ] && [ -n "$b" ]; then ratio "$a" "$b"
  elif [ -n "${PARTIAL[$1]:-}" ] && [ -n "$b" ]; then set -- ${PARTIAL[$1]}; echo "> $(ratio "$2" "$b")"
  else echo "n/a"; fi
}
# shellcheck disable=SC2086
{ R_CRPE=$(maxof ${RSS[crpe]:-}); R_KUBECTL=$(maxof ${RSS[kubectl]:-}); }
if [ "$MANY_DONE" = 1 ]; then
  MANY_CELL=$(fmt "$MANY_HWM" 1); MANY_MET=$(verdict 'v<80' "$MANY_HWM" 1)
  MANY_TIME="$(fmt "$MANY_WALL" 2)"
else
  MANY_CELL="≥ $(fmt "$MANY_HWM" 1) (only ${MANY_APPLIED:-?} of $NPKGS applied)"; MANY_MET="–"
  MANY_TIME="> $(fmt "$MANY_WALL" 0) (only ${MANY_APPLIED:-?} applied)"
fi
echo
echo "<!-- bench/operator.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), kube-apiserver $KUBE_VERSION, kubectl $(basename "$(readlink -f "$KUBECTL_BIN")" | sed 's/^kubectl-//'), $("$ETCD" --version | head -1) -->"
echo "One API server (kube-apiserver + etcd with its data on $( [ "${ETCD_DIR#/dev/shm}" != "$ETCD_DIR" ] && echo tmpfs || echo disk ), no nodes, no controller-manager) on loopback 127.0.0.1. ${N_OBJ} manifests = ${N_CM} ConfigMaps (~0.5 KiB of data each) + ${N_SECRET} Secrets + ${N_SVC} Services (ClusterIP), each run into a fresh namespace, median of ${RUNS} interleaved runs (crpe apply, kubectl and the operator in rotating order), \`sync\` before every timed step; a run that hits its ${STEP_SECONDS} s bound is shown as a lower bound and not repeated."
echo
echo "| metric | crpe | peer | crpe / peer | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| \`crpe apply -f pkg.json\` of ${N_OBJ} manifests, wall time (s) — vs \`kubectl apply --server-side\` of the same objects | $(shown crpe 2) | $(shown kubectl 2) | $(ratio_of crpe kubectl) | ≤ 1.0× | $(verdict 'r<=1.0' "$(med crpe)" "$(med kubectl)") |"
echo "| the same package through \`crpe operator\`: \`kubectl apply\` of the KubePkg → Applied=True (s) — vs \`kubectl apply --server-side\` of the objects | $(shown operator 2) | $(shown kubectl 2) | $(ratio_of operator kubectl) | ≤ 1.0× | $(verdict 'r<=1.0' "$(med operator)" "$(med kubectl)") |"
echo "| \`crpe operator\` peak RSS, VmHWM, ${NPKGS} KubePkgs (2 ConfigMaps each) all Applied=True (MiB) — vs the same operator at start | ${MANY_CELL} | $(fmt "$RSS_START" 1) | $(ratio "$MANY_HWM" "$RSS_START") | crpe < 80 MiB | ${MANY_MET} |"
echo "| ${NPKGS} KubePkgs: one \`kubectl apply\` → all Applied=True (s) — vs their deletion through the finalizer | ${MANY_TIME} | $( [ -n "$DEL_WALL" ] && fmt "$DEL_WALL" 2 || echo "n/a") | $( [ "$MANY_DONE" = 1 ] && [ -n "$DEL_WALL" ] && ratio "$MANY_WALL" "$DEL_WALL" || echo n/a) | (info) | |"
echo "| peak RSS of one apply of ${N_OBJ} manifests (MiB): \`crpe apply\` — vs kubectl | ${R_CRPE:-n/a} | ${R_KUBECTL:-n/a} | $(ratio "${R_CRPE:-}" "${R_KUBECTL:-}") | (info) | |"
echo "| \`crpe operator\` VmHWM after the ${N_OBJ}-manifest packages (MiB) — vs with ${NPKGS} small packages | $(fmt "$OP_HWM" 1) | $(fmt "$MANY_HWM" 1) | $(ratio "$OP_HWM" "$MANY_HWM") | (info) | |"
reqs() { # shellcheck disable=SC2086
  if [ -n "${REQS[$1]:-}" ]; then median ${REQS[$1]}; fi
}
echo "| API requests on the ${N_OBJ} objects, one apply (apiserver_request_total, dry runs and GETs included): \`crpe apply\` / operator — vs kubectl | $(reqs crpe) / $(reqs operator) | $(reqs kubectl) | $(ratio "$(reqs crpe)" "$(reqs kubectl)") / $(ratio "$(reqs operator)" "$(reqs kubectl)") | (info) | |"
re() { # shellcheck disable=SC2086
  local -n a=$1; if [ -n "${a[$2]:-}" ]; then median ${a[$2]}; fi
}
echo "| the same apply again, nothing changed (a resync): API requests on the ${N_OBJ} objects, of which writes — \`crpe apply\` vs kubectl | $(re RE_REQS crpe), $(re RE_WRITES crpe) writes | $(re RE_REQS kubectl), $(re RE_WRITES kubectl) writes | $(ratio "$(re RE_REQS crpe)" "$(re RE_REQS kubectl)") | (info) | |"
echo "| the same apply again, nothing changed: wall time (s) — \`crpe apply\` vs kubectl | $(fmt "$(re RE_WALL crpe)" 2) | $(fmt "$(re RE_WALL kubectl)" 2) | $(ratio "$(re RE_WALL crpe)" "$(re RE_WALL kubectl)") | (info) | |"
echo
echo "Wall times (s), every run: crpe apply${WALL[crpe]:- –}; kubectl${WALL[kubectl]:- –}; operator${WALL[operator]:- –}. The operator's RSS after the ${NPKGS} packages: ${MANY_RSS} MiB (RssAnon ${MANY_ANON}, RssFile ${MANY_FILE}); after the ${N_OBJ}-manifest packages: RssAnon ${OP_ANON}, RssFile ${OP_FILE} (RssFile is the mapped binary). The operator's time includes kubectl's start-up, the watch event, the apply and the status write; Applied=True is watched over HTTPS with the admin token (bench/operatorfix: one LIST, then a watch)."
echo
echo "Reproduce: \`bash test/peers/kube.sh && bash bench/operator.sh\` (or \`bash bench/operator.sh path/to/crpe\`; BENCH_RUNS, BENCH_PKGS, BENCH_STEP_SECONDS tune it)."
