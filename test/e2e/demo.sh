#!/usr/bin/env bash
# The whole air-gap story on one machine (issue 7), as the commands a person
# would type, with readable progress:
#
#   internet side  a docker-registry holds the images; `crpe serve` caches
#                  them; the registry and the pocket stop; `crpe export
#                  --offline` writes v1 and v2 of a package from the cache
#   intranet side  a one-node cluster starts; `crpe agent` and `crpe
#                  operator` run; `crpe mirror-config` points the node's
#                  containerd at the agent; `crpe import` of v1 ends with a
#                  pod running the agent's image; v2 sends only the changed
#                  blobs and rolls out; a downgrade to v1 is refused
#
# Everything listens on 127.0.0.1 (the pods on a bridge of their own) and
# lives in one temp folder; at the end (or on Ctrl-C) everything stops, and
# the node checks that the host is as it was.
#
# Needs root (the node mounts, makes cgroups, network namespaces, a bridge),
# Debian's docker-registry, etcd-server, containerd, runc and
# containernetworking-plugins, and the kube binaries of test/peers/kube.sh
# (built here when missing: a few minutes, cached).
#
# Usage: sudo bash test/e2e/demo.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$(go env GOPATH)/bin:$PATH"
# the story needs no network: anything but loopback and the pods goes to a
# dead loopback port
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost,10.244.0.0/24
export http_proxy=$HTTP_PROXY https_proxy=$HTTPS_PROXY no_proxy=$NO_PROXY
unset KUBECONFIG

if [ -t 1 ]; then B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[31m' O=$'\e[0m'; else B= D= G= R= O=; fi
T0=$(date +%s.%N)
step() { printf '\n%s==> [%5.1fs] %s%s\n' "$B" "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" "$O"; }
say() { printf '    %s\n' "$*"; }
ok() { printf '    %s✔ %s%s\n' "$G" "$*" "$O"; }
fail() { printf '    %s✘ %s%s\n' "$R" "$*" "$O"; exit 1; }
show() { printf '%s$ %s%s\n' "$D" "$*" "$O"; "$@"; }
cmdline() { printf '%s$ %s &%s\n' "$D" "$*" "$O"; } # shows a command started in the background
get() { curl --noproxy '*' -fsS "$@"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | xargs printf '%.1f'; }

[ "$(id -u)" = 0 ] || { echo "demo.sh needs root: the one-node cluster mounts, makes cgroups, network namespaces and a bridge" >&2; exit 1; }
missing=()
for p in docker-registry etcd containerd containerd-shim-runc-v2 runc ip curl bc jq; do
  command -v "$p" >/dev/null || missing+=("$p")
done
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || missing+=(containernetworking-plugins)
if ((${#missing[@]})); then
  echo "missing: ${missing[*]} (apt-get install docker-registry etcd-server containerd runc containernetworking-plugins iproute2 curl bc jq)" >&2
  exit 1
fi
if ! command -v kubelet >/dev/null || ! command -v kube-controller-manager >/dev/null || ! command -v kube-scheduler >/dev/null; then
  step "building the kube binaries (once, cached in $(go env GOPATH)/bin)"
  KUBE_WITH_NODE=1 bash test/peers/kube.sh
fi

W=$(mktemp -d /tmp/crpe-demo-XXXXXX)
mkdir -p "$W/bin" "$W/logs"
pids=()      # background processes, by pid, stopped in reverse order
node_pid=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  step "stopping everything"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$node_pid" ]; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" || status=1
  fi
  if ((status != 0)); then
    echo "the demo failed; last lines of the logs:"
    for f in "$W"/logs/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done
  fi
  rm -rf "$W"
  [ -e "$W" ] && echo "left $W behind" && status=1
  ((status == 0)) && printf '\n%sThe whole story ran in %ss and left nothing behind.%s\n' "$B" "$(since "$T0")" "$O"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# waits until a command succeeds (up to $1 seconds)
until_ok() {
  local t=$1; shift
  local end=$(($(date +%s) + t))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < end)) || return 1
    sleep 0.2
  done
}
port() { "$W/bin/demo" port; }

step "building crpe and the demo helper (test/e2e/demo)"
show go build -o "$W/bin/crpe" ./cmd/crpe
show go build -o "$W/bin/demo" ./test/e2e/demo
export PATH="$W/bin:$PATH"
"$W/bin/demo" sweep   # undo a node a killed run may have left

# ---------------------------------------------------------------- internet side
step "internet side: a local docker-registry holds the images"
REG=127.0.0.1:$(port)
cat >"$W/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $W/registry}}
http: {addr: $REG}
EOF
docker-registry serve "$W/registry.yml" >"$W/logs/registry.log" 2>&1 &
reg_pid=$!
pids+=("$reg_pid")
until_ok 15 get "http://$REG/v2/" || fail "docker-registry did not start"
say "docker-registry on $REG"
show demo images -push "$REG"

step "the pocket caches them: crpe serve, and a client pulls through it"
POCKET=127.0.0.1:$(port)
cmdline crpe serve --addr "$POCKET" --data "$W/pocket" \
  --registry-endpoint "docker.io=http://$REG" --registry-endpoint "registry.k8s.io=http://$REG"
crpe serve --addr "$POCKET" --data "$W/pocket" \
  --registry-endpoint "docker.io=http://$REG" --registry-endpoint "registry.k8s.io=http://$REG" \
  --log-format text >"$W/logs/pocket.log" 2>&1 &
pocket_pid=$!
pids+=("$pocket_pid")
until_ok 15 get "http://$POCKET/healthz" || fail "crpe serve did not start"
show demo pull -pocket "$POCKET" -data "$W/pocket"

step "the upstream registry and the pocket go away"
kill -TERM "$pocket_pid" "$reg_pid"
wait "$pocket_pid" "$reg_pid" 2>/dev/null || true
ok "crpe serve and docker-registry stopped: from here on, only the pocket's cache ($W/pocket) is left"

step "crpe export writes v1 and v2 of the package from the cache (--offline)"
demo package v1 >"$W/hello-v1.yaml"
demo package v2 >"$W/hello-v2.yaml"
say "v1: Deployment hello (docker.io/library/hello:v1), Service hello, ConfigMap hello-config; images hello:v1 + registry.k8s.io/pause:3.10"
say "v2: hello:v2, the ConfigMap dropped"
for v in v1 v2; do
  show crpe export -f "$W/hello-$v.yaml" -o "$W/hello-$v.kubepkg.tgz" --data "$W/pocket" --offline --log-format text
done
show crpe inspect "$W/hello-v2.kubepkg.tgz" --verify
ls -l "$W"/*.kubepkg.tgz | awk '{printf "    %s  %s bytes\n", $NF, $5}'

# ---------------------------------------------------------------- intranet side
step "intranet side: a one-node cluster (etcd, kube-apiserver, controller-manager, scheduler, kubelet, containerd)"
cmdline demo node -env "$W/node.env"
demo node -env "$W/node.env" &
node_pid=$!
until_ok 120 test -f "$W/node.env" || fail "the node did not start"
# shellcheck disable=SC1091
. "$W/node.env"
export KUBECONFIG
show kubectl get nodes -o wide

step "crpe agent (with Kubernetes access) and crpe operator run on the node side"
AGENT=127.0.0.1:$(port)
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/token"
cmdline crpe agent --addr "$AGENT" --data "$W/agent" --token-file "$W/token" --kubeconfig "$KUBECONFIG" --namespace default
crpe agent --addr "$AGENT" --data "$W/agent" --token-file "$W/token" \
  --kubeconfig "$KUBECONFIG" --namespace default --log-format text >"$W/logs/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
OPH=127.0.0.1:$(port)
cmdline crpe operator --kubeconfig "$KUBECONFIG" --namespace default --health-addr "$OPH"
crpe operator --kubeconfig "$KUBECONFIG" --namespace default --health-addr "$OPH" \
  --log-format text >"$W/logs/operator.log" 2>&1 &
operator_pid=$!
pids+=("$operator_pid")
until_ok 15 get "http://$AGENT/healthz" || fail "crpe agent did not start"
until_ok 30 grep -q "Starting workers" "$W/logs/operator.log" || fail "crpe operator did not start"
ok "agent on $AGENT, operator watching namespace default"

step "crpe mirror-config points the node's containerd at the agent"
show crpe mirror-config --agent "http://$AGENT" --hosts docker.io,registry.k8s.io -o "$CERTS_D"
sed 's/^/    /' "$CERTS_D/docker.io/hosts.toml"

# prints the hello pods: name, phase, ready, image, imageID, IP
pods() {
  kubectl get pods -l app=hello -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\t"}{.status.containerStatuses[0].ready}{"\t"}{.spec.containers[0].image}{"\t"}{.status.containerStatuses[0].imageID}{"\t"}{.status.podIP}{"\n"}{end}'
}
# waits until every hello pod runs image $1 (by digest) and is ready
rolled_to() {
  local want=$1 out
  out=$(pods)
  [ -n "$out" ] && ! grep -qv "	Running	true	.*@$want	" <<<"$out"
}
digest_of() { # the digest an archive pins a reference to
  tar -xzOf "$1" kubepkg.json | jq -r --arg r "$2" '.spec.images[$r]'
}
V1=$(digest_of "$W/hello-v1.kubepkg.tgz" docker.io/library/hello:v1)
V2=$(digest_of "$W/hello-v2.kubepkg.tgz" docker.io/library/hello:v2)

step "crpe import hands v1 over"
t=$(now)
show crpe import "$W/hello-v1.kubepkg.tgz" --to "http://$AGENT" --token-file "$W/token" --log-format text
until_ok 90 rolled_to "$V1" || { pods; fail "no ready v1 pod"; }
ok "a v1 pod is Running and Ready $(since "$t")s after the import began"
pods | awk -F'\t' '{printf "    %s %s ready=%s\n      image   %s\n      imageID %s\n      IP      %s\n", $1, $2, $3, $4, $5, $6}'
[[ "$(pods)" == *"@$V1"* ]] && ok "its imageID is the exported digest $V1"
IP=$(pods | cut -f6 | head -1)
show get "http://$IP:8080/"
show kubectl get kubepkg hello
show kubectl get deployments,services,configmaps -l app.kubernetes.io/managed-by=crpe

step "crpe import of v2 sends only the changed blobs; the Deployment rolls out to v2"
t=$(now)
show crpe import "$W/hello-v2.kubepkg.tgz" --to "http://$AGENT" --token-file "$W/token" --log-format text
until_ok 90 rolled_to "$V2" || { pods; fail "not rolled out to v2"; }
ok "rolled out to v2 $(since "$t")s after the import began (archive: $(stat -c %s "$W/hello-v2.kubepkg.tgz") bytes)"
IP=$(pods | cut -f6 | head -1)
show get "http://$IP:8080/"
until_ok 30 sh -c '! kubectl get configmap hello-config >/dev/null 2>&1' || fail "the ConfigMap was not pruned"
ok "ConfigMap hello-config pruned (v2 dropped it)"

step "a downgrade to v1 is refused; the pod keeps running v2"
if crpe import "$W/hello-v1.kubepkg.tgz" --to "http://$AGENT" --token-file "$W/token" --log-format text 2>"$W/logs/downgrade.log"; then
  fail "the downgrade was accepted"
fi
say "$(tail -n 1 "$W/logs/downgrade.log")"
sleep 3
rolled_to "$V2" || { pods; fail "the pod does not run v2 any more"; }
show kubectl get kubepkg hello
ok "still v2: $(get "http://$IP:8080/")"
