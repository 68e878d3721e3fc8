#!/usr/bin/env bash
# The project's test command: installs the real peers the tests need (when
# missing), then runs vet, every test, short fuzz runs and the cross-builds.
# Usage: bash test/run.sh        (CI=true makes a missing peer a failure)
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$(go env GOPATH)/bin:$PATH"
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
CRANE_VERSION=v0.22.1
HELM_VERSION=v4.3.2
DISTRIBUTION_VERSION=v3.1.2
COSIGN_VERSION=v2.6.5

step() { printf '\n==> %s\n' "$*"; }

step "installing peers (only what is missing)"
if ! command -v conformance >/dev/null; then
  GOFLAGS=-mod=mod go install "github.com/opencontainers/distribution-spec/conformance@${CONFORMANCE_VERSION}"
fi
if ! command -v crane >/dev/null; then
  GOFLAGS=-mod=mod go install "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}"
fi
# helm, the judge of `crpe package` and `crpe manifests --helm-chart` (test/chart): built from the module proxy
if ! go version -m "$(go env GOPATH)/bin/helm" 2>/dev/null | grep -q "helm.sh/helm/v4[[:space:]]*${HELM_VERSION}"; then
  GOFLAGS=-mod=mod go install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
fi
# CNCF distribution v3, the site registry of test/toregistry (crpe import --to-registry): the
# binary is named `registry`, so its module path is checked, not just its name
if ! go version -m "$(go env GOPATH)/bin/registry" 2>/dev/null | grep -q "github.com/distribution/distribution/v3[[:space:]]*${DISTRIBUTION_VERSION}"; then
  GOFLAGS=-mod=mod go install "github.com/distribution/distribution/v3/cmd/registry@${DISTRIBUTION_VERSION}"
fi
# cosign, the signer and judge of signatures, attestations and SBOMs next to an image
# (test/cosignpeer, internal/testenv/cosign.go): a heavy build (minutes), so its version is checked
if ! go version -m "$(go env GOPATH)/bin/cosign" 2>/dev/null | grep -q "github.com/sigstore/cosign/v2[[:space:]]*${COSIGN_VERSION}"; then
  GOFLAGS=-mod=mod go install "github.com/sigstore/cosign/v2/cmd/cosign@${COSIGN_VERSION}"
fi
if ! command -v conformance-ro >/dev/null; then
  bash test/peers/conformance-ro.sh "${CONFORMANCE_VERSION}"
fi
apt_pkgs=()
command -v docker-registry >/dev/null || apt_pkgs+=(docker-registry)
command -v skopeo >/dev/null || apt_pkgs+=(skopeo)
command -v containerd >/dev/null || apt_pkgs+=(containerd)
# the one-node cluster of test/e2e: runc, the CNI bridge plugin, iproute2
command -v runc >/dev/null || apt_pkgs+=(runc)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || apt_pkgs+=(containernetworking-plugins)
command -v ip >/dev/null || apt_pkgs+=(iproute2)
# headless Chromium for the web UI tests (test/webui)
[ -x /usr/bin/chromium ] || apt_pkgs+=(chromium)
if ((${#apt_pkgs[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
  else
    echo "missing ${apt_pkgs[*]} and cannot apt-get install them (not root?); tests needing them will skip (fail under CI=true)"
  fi
fi

# etcd (Debian) and kube-apiserver + kubectl, and for test/e2e's one-node
# cluster kube-controller-manager, kube-scheduler and the kubelet (built from
# the Go module proxy, cached)
KUBE_WITH_NODE=1 bash test/peers/kube.sh

step "go vet"
go vet ./...

step "building crpe once for the tests"
# every test process runs this binary (testenv.Crpe reads CRPE_BIN) instead
# of building its own; the folder goes when this script exits, however
tmp=$(mktemp -d "${TMPDIR:-/tmp}/crpe-test-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 go build -o "$tmp/crpe" ./cmd/crpe
export CRPE_BIN="$tmp/crpe"

step "go test"
go test -count=1 -timeout 20m ./...

step "fuzz (short runs)"
# bounded by executions, not time: a time limit can end the run while the
# engine minimizes a new input, which go test reports as a failure
fuzz() { go test -run='^$' -fuzz="^$1\$" -fuzztime="${3:-${FUZZRUNS:-40000}x}" -fuzzminimizetime=5s "$2"; }
fuzz FuzzParseRoute ./internal/registry
fuzz FuzzValidName ./internal/oci
fuzz FuzzParseDigest ./internal/oci
fuzz FuzzParseContentRange ./internal/registry
fuzz FuzzCheckRange ./internal/registry
fuzz FuzzParseManifest ./internal/oci
fuzz FuzzNormalizeReference ./internal/oci 20000x
fuzz FuzzRead ./internal/archive 3000x
fuzz FuzzParse ./internal/kubepkg 20000x
fuzz FuzzParse ./internal/parts 20000x

step "cross-builds (CGO_ENABLED=0)"
# every target is type-checked from source (no code generation: seconds, not
# minutes, per target); linux/amd64 was also built in full above ($CRPE_BIN),
# and the two that ship to devices (boards, phones) are built in full here
go run ./test/typecheck linux/amd64 linux/arm/7 darwin/arm64 windows/amd64
for target in linux/arm64 android/arm64; do
  IFS=/ read -r os arch <<<"$target"
  GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -o /dev/null ./cmd/crpe
  echo "built $target"
done

echo
echo "all tests passed"
