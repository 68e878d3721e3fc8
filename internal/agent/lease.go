package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/octohelm/crpe/internal/importer"
)

// DefaultLeaseDuration is how long an import's lease holds without being
// renewed: a replica killed in mid-import blocks its package that long.
const DefaultLeaseDuration = 2 * time.Minute

// leaseNamePrefix starts the name of every import lease.
const leaseNamePrefix = "crpe-import."

// maxLeaseName bounds a lease's name (a DNS-1123 subdomain may have 253
// characters; a shorter one reads better in kubectl).
const maxLeaseName = 120

// importLocks are the agents' per-package locks in registry mode: one
// coordination.k8s.io/v1 Lease per package (LeaseName), in the agents' own
// namespace, taken by an optimistic create or update (the resourceVersion
// decides between two replicas), held by the replica (holder), renewed
// while the import runs and deleted when it ends. A lease not renewed for
// its duration is expired and taken over.
type importLocks struct {
	c        client.Client
	ns       string // where the leases are
	holder   string // this replica
	duration time.Duration
	now      func() time.Time
	// started is when this process started: a lease of this replica's
	// name acquired before it is a dead process's (a container restarted
	// in the same pod keeps its POD_NAME), taken over at once rather than
	// waited out
	started time.Time
}

func newImportLocks(c client.Client, ns, holder string) *importLocks {
	return &importLocks{c: c, ns: ns, holder: holder, duration: DefaultLeaseDuration, now: time.Now, started: time.Now()}
}

// replicaIdentity names this replica in the leases it holds: the pod's
// name (POD_NAME, from the downward API) or the host's name and the
// process id.
func replicaIdentity() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s pid %d", host, os.Getpid())
}

// LeaseName is the name of the lease of package namespace/name:
// crpe-import.NAMESPACE.NAME. A namespace has no dot, so the name is one
// package's only; it is already a DNS-1123 subdomain when the package's
// names are valid Kubernetes names. Otherwise (characters out of
// [a-z0-9.-], or longer than 120 characters) the name is lower-cased, every
// other character becomes '-', it is cut short, and "-" and 10 hex digits of
// the SHA-256 of "namespace/name" are appended, so that it stays one
// package's.
func LeaseName(namespace, name string) string {
	plain := leaseNamePrefix + namespace + "." + name
	if isSubdomain(plain) && len(plain) <= maxLeaseName {
		return plain
	}
	var b strings.Builder
	for _, r := range strings.ToLower(plain) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	suffix := "-" + hex.EncodeToString(sum[:])[:10]
	s := b.String()
	if len(s) > maxLeaseName-len(suffix) {
		s = s[:maxLeaseName-len(suffix)]
	}
	// each dot-separated label starts and ends alphanumeric
	labels := strings.Split(strings.TrimRight(s, ".-"), ".")
	var keep []string
	for _, l := range labels {
		if l = strings.Trim(l, "-"); l != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, ".") + suffix
}

// isSubdomain tells whether s is a DNS-1123 subdomain (a Lease's name).
func isSubdomain(s string) bool { return len(validation.IsDNS1123Subdomain(s)) == 0 }

// lockError is an error of the lease API itself (not another import).
func lockError(op, name string, err error) error {
	return &importer.Error{Status: http.StatusBadGateway, Code: "CLUSTER_UNAVAILABLE",
		Reason: fmt.Sprintf("the import lock (Lease %s) cannot be %s: %v", name, op, err)}
}

// pkgKey is a package as namespace and name.
type pkgKey struct{ ns, name string }

// heldLocks are the leases one import holds.
type heldLocks struct {
	l      *importLocks
	onLost func(error) // called once, when a lease is found taken over
	mu     sync.Mutex
	leases map[string]*coordinationv1.Lease // by name: as last written
	pkgs   map[string]pkgKey
	lost   error
	stop   chan struct{}
	done   chan struct{}
}

// acquire takes the lease of every package (in order), or none: a package
// another import holds answers 409 IMPORT_IN_PROGRESS naming the holder.
// Once taken, the leases are renewed every quarter of their duration until
// release; onLost is called if one is found taken over (this replica
// failed to renew it in time).
func (l *importLocks) acquire(ctx context.Context, pkgs []pkgKey, onLost func(error)) (*heldLocks, error) {
	h := &heldLocks{l: l, onLost: onLost, leases: map[string]*coordinationv1.Lease{}, pkgs: map[string]pkgKey{},
		stop: make(chan struct{}), done: make(chan struct{})}
	sorted := append([]pkgKey{}, pkgs...)
	sort.Slice(sorted, func(i, j int) bool {
		return sorted[i].ns < sorted[j].ns || sorted[i].ns == sorted[j].ns && sorted[i].name < sorted[j].name
	})
	for _, p := range sorted {
		name := LeaseName(p.ns, p.name)
		if _, ok := h.leases[name]; ok {
			continue
		}
		lease, err := l.take(ctx, p, name)
		if err != nil {
			h.releaseAll()
			return nil, err
		}
		h.leases[name], h.pkgs[name] = lease, p
	}
	go h.renewLoop()
	return h, nil
}

// take creates the lease name, or takes it over when it is expired or
// released; a conflicting write of another replica is read again (a few
// times).
func (l *importLocks) take(ctx context.Context, p pkgKey, name string) (*coordinationv1.Lease, error) {
	for range 5 {
		now := metav1.NewMicroTime(l.now())
		secs := int32(l.duration / time.Second)
		cur := &coordinationv1.Lease{}
		err := l.c.Get(ctx, client.ObjectKey{Namespace: l.ns, Name: name}, cur)
		if apierrors.IsNotFound(err) {
			lease := &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: name, Labels: map[string]string{
					"app.kubernetes.io/managed-by": "crpe", "app.kubernetes.io/component": "agent"},
					Annotations: map[string]string{"octohelm.tech/kubepkg": p.ns + "/" + p.name}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &l.holder, LeaseDurationSeconds: &secs,
					AcquireTime: &now, RenewTime: &now},
			}
			err := l.c.Create(ctx, lease)
			if apierrors.IsAlreadyExists(err) {
				continue // another replica created it first: read it
			}
			if err != nil {
				return nil, lockError("created", l.ns+"/"+name, err)
			}
			return lease, nil
		}
		if err != nil {
			return nil, lockError("read", l.ns+"/"+name, err)
		}
		if holder, busy := l.busy(cur); busy {
			return nil, &importer.Error{Status: http.StatusConflict, Code: "IMPORT_IN_PROGRESS",
				Reason: fmt.Sprintf("package %s/%s is being imported through replica %s (Lease %s/%s); nothing was sent: import again once that import is done (a lease not renewed for %s is taken over)",
					p.ns, p.name, holder, l.ns, name, time.Duration(leaseSeconds(cur))*time.Second)}
		}
		// released or expired: taken over
		cur.Spec.HolderIdentity = &l.holder
		cur.Spec.LeaseDurationSeconds = &secs
		cur.Spec.AcquireTime, cur.Spec.RenewTime = &now, &now
		n := int32(1)
		if cur.Spec.LeaseTransitions != nil {
			n = *cur.Spec.LeaseTransitions + 1
		}
		cur.Spec.LeaseTransitions = &n
		err = l.c.Update(ctx, cur) // fails with a conflict when another replica wrote it since
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, lockError("updated", l.ns+"/"+name, err)
		}
		return cur, nil
	}
	return nil, &importer.Error{Status: http.StatusConflict, Code: "IMPORT_IN_PROGRESS",
		Reason: fmt.Sprintf("package %s/%s: its import lock (Lease %s/%s) keeps changing under other imports; import again", p.ns, p.name, l.ns, name)}
}

// busy tells whether a lease is held (by whom): it names a holder and was
// renewed within its duration. The holder may be this replica too (another
// import of the same package through it), but not an earlier process of
// it: a lease of this replica's name acquired before this process started
// was left by one that died (its container restarted) and is free.
func (l *importLocks) busy(lease *coordinationv1.Lease) (string, bool) {
	if holderOf(lease) == "" {
		return "", false
	}
	if holderOf(lease) == l.holder && lease.Spec.AcquireTime != nil && lease.Spec.AcquireTime.Time.Before(l.started) {
		return "", false
	}
	until := renewed(lease).Add(time.Duration(leaseSeconds(lease)) * time.Second)
	return holderOf(lease), l.now().Before(until)
}

func holderOf(lease *coordinationv1.Lease) string {
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

func renewed(lease *coordinationv1.Lease) time.Time {
	switch {
	case lease.Spec.RenewTime != nil:
		return lease.Spec.RenewTime.Time
	case lease.Spec.AcquireTime != nil:
		return lease.Spec.AcquireTime.Time
	}
	return lease.CreationTimestamp.Time
}

func leaseSeconds(lease *coordinationv1.Lease) int32 {
	if lease.Spec.LeaseDurationSeconds == nil || *lease.Spec.LeaseDurationSeconds <= 0 {
		return int32(DefaultLeaseDuration / time.Second)
	}
	return *lease.Spec.LeaseDurationSeconds
}

// renewLoop renews the leases every quarter of their duration until
// release.
func (h *heldLocks) renewLoop() {
	defer close(h.done)
	t := time.NewTicker(h.l.duration / 4)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), h.l.duration/4)
			_ = h.renew(ctx)
			cancel()
		}
	}
}

// renew writes a fresh renewTime into every lease. A lease another replica
// took over (or deleted) is lost: renew then returns an IMPORT_LEASE_LOST
// error, and onLost is called once. A failure of the API server is
// returned, and the lease kept: it is lost only if another replica takes
// it.
func (h *heldLocks) renew(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost != nil {
		return h.lost
	}
	names := make([]string, 0, len(h.leases))
	for n := range h.leases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		lease := h.leases[name].DeepCopy()
		now := metav1.NewMicroTime(h.l.now())
		lease.Spec.RenewTime = &now
		err := h.l.c.Update(ctx, lease)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			cur := &coordinationv1.Lease{}
			gerr := h.l.c.Get(ctx, client.ObjectKeyFromObject(lease), cur)
			if gerr != nil && !apierrors.IsNotFound(gerr) {
				return lockError("read", h.l.ns+"/"+name, gerr)
			}
			if gerr == nil && holderOf(cur) == h.l.holder && cur.Spec.AcquireTime.Equal(h.leases[name].Spec.AcquireTime) {
				// still ours (an earlier renewal's answer was lost): the
				// next renewal starts from it
				h.leases[name] = cur
				return lockError("renewed", h.l.ns+"/"+name, err)
			}
			p := h.pkgs[name]
			who := "another import"
			if gerr == nil && holderOf(cur) != "" {
				who = "replica " + holderOf(cur)
			}
			h.lost = &importer.Error{Status: http.StatusConflict, Code: "IMPORT_LEASE_LOST",
				Reason: fmt.Sprintf("package %s/%s: this replica's import lock (Lease %s/%s) was not renewed in time and %s took it over; nothing more is written: import again",
					p.ns, p.name, h.l.ns, name, who)}
			if h.onLost != nil {
				h.onLost(h.lost)
			}
			return h.lost
		}
		if err != nil {
			return lockError("renewed", h.l.ns+"/"+name, err)
		}
		h.leases[name] = lease
	}
	return nil
}

// release stops the renewal and deletes every lease still this import's
// (a delete with its resourceVersion as precondition: a lease another
// replica took over is left to it).
func (h *heldLocks) release() {
	close(h.stop)
	<-h.done
	h.releaseAll()
}

func (h *heldLocks) releaseAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, lease := range h.leases {
		rv := lease.ResourceVersion
		_ = h.l.c.Delete(ctx, lease, client.Preconditions{ResourceVersion: &rv})
	}
	h.leases = map[string]*coordinationv1.Lease{}
}
