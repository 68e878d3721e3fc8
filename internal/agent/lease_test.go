package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/kubeclient"
)

// clock is a settable time for the leases' expiry.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newLocks(c client.Client, holder string, clk *clock) *importLocks {
	l := newImportLocks(c, "crpe-system", holder)
	l.now, l.started = clk.now, clk.now()
	return l
}

func fakeClient(funcs *interceptor.Funcs) client.WithWatch {
	b := fake.NewClientBuilder().WithScheme(kubeclient.Scheme())
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

func getLease(t *testing.T, c client.Client, ns, name string) *coordinationv1.Lease {
	t.Helper()
	l := &coordinationv1.Lease{}
	err := c.Get(context.Background(), client.ObjectKey{Namespace: "crpe-system", Name: LeaseName(ns, name)}, l)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func wantCode(t *testing.T, err error, code string, mentions ...string) {
	t.Helper()
	var ie *importer.Error
	if !errors.As(err, &ie) || ie.Code != code {
		t.Fatalf("error %v, want %s", err, code)
	}
	for _, m := range mentions {
		if !strings.Contains(ie.Reason, m) {
			t.Errorf("%s does not name %q: %s", code, m, ie.Reason)
		}
	}
}

func TestLeaseName(t *testing.T) {
	if got := LeaseName("team-a", "demo"); got != "crpe-import.team-a.demo" {
		t.Errorf("LeaseName(team-a, demo) = %q", got)
	}
	// a dotted package name stays its own: the namespace has no dot
	if a, b := LeaseName("a", "b.c"), LeaseName("a-b", "c"); a == b {
		t.Errorf("two packages share the lease %q", a)
	}
	long := strings.Repeat("x", 200)
	names := map[string]bool{}
	for _, in := range [][2]string{{"ns", long}, {"ns", long + "y"}, {"ns", "Demo_App"}, {"ns", "demo-app"}, {"ns", "-.weird..."}} {
		got := LeaseName(in[0], in[1])
		if !isSubdomain(got) || len(got) > maxLeaseName {
			t.Errorf("LeaseName(%q, %q) = %q: not a DNS-1123 subdomain of at most %d characters", in[0], in[1], got, maxLeaseName)
		}
		if names[got] {
			t.Errorf("LeaseName(%q, %q) = %q, another package's too", in[0], in[1], got)
		}
		names[got] = true
	}
	if got := LeaseName("ns", "Demo_App"); !strings.HasPrefix(got, "crpe-import.ns.demo-app-") {
		t.Errorf("LeaseName(ns, Demo_App) = %q, want the sanitized name with a hash suffix", got)
	}
}

// TestImportLocks: a package's lease is taken by one replica; another (or
// the same replica's second import) is refused with IMPORT_IN_PROGRESS
// naming the holder; released, it is taken; an expired lease is taken
// over, and its old holder's renewal then finds it lost and says so once;
// renewals keep a lease past its first duration; several packages are
// taken all or none.
func TestImportLocks(t *testing.T) {
	ctx := context.Background()
	c := fakeClient(nil)
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	a, b := newLocks(c, "agent-a", clk), newLocks(c, "agent-b", clk)
	demo := pkgKey{"team", "demo"}

	ha, err := a.acquire(ctx, []pkgKey{demo}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := getLease(t, c, "team", "demo")
	if l == nil || holderOf(l) != "agent-a" || *l.Spec.LeaseDurationSeconds != 120 || l.Annotations["octohelm.tech/kubepkg"] != "team/demo" {
		t.Fatalf("lease after A's acquire: %+v", l)
	}
	_, err = b.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "team/demo", "agent-a", "crpe-system/crpe-import.team.demo")
	_, err = a.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-a")
	if holderOf(getLease(t, c, "team", "demo")) != "agent-a" {
		t.Fatal("a refused acquire changed the lease")
	}

	// renewed, the lease holds past its first duration
	clk.t = clk.t.Add(100 * time.Second)
	if err := ha.renew(ctx); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(100 * time.Second)
	_, err = b.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-a")

	// released: deleted, B takes it
	ha.release()
	if l := getLease(t, c, "team", "demo"); l != nil {
		t.Fatalf("lease left after release: %+v", l)
	}
	hb, err := b.acquire(ctx, []pkgKey{demo}, nil)
	if err != nil {
		t.Fatal(err)
	}

	// B's replica dies: once expired, A takes it over; B's renewal finds
	// it lost, calls onLost once, and B's release leaves A's lease
	hb.mu.Lock() // as if B stopped renewing
	close(hb.stop)
	<-hb.done
	hb.stop = make(chan struct{})
	hb.done = make(chan struct{})
	go func() { <-hb.stop; close(hb.done) }()
	var lost []error
	hb.onLost = func(err error) { lost = append(lost, err) }
	hb.mu.Unlock()
	clk.t = clk.t.Add(119 * time.Second)
	_, err = a.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-b")
	clk.t = clk.t.Add(2 * time.Second)
	ha, err = a.acquire(ctx, []pkgKey{demo}, nil)
	if err != nil {
		t.Fatalf("an expired lease was not taken over: %v", err)
	}
	l = getLease(t, c, "team", "demo")
	if holderOf(l) != "agent-a" || l.Spec.LeaseTransitions == nil || *l.Spec.LeaseTransitions != 1 {
		t.Fatalf("lease after the takeover: %+v", l.Spec)
	}
	err = hb.renew(ctx)
	wantCode(t, err, "IMPORT_LEASE_LOST", "team/demo", "agent-a")
	_ = hb.renew(ctx)
	if len(lost) != 1 {
		t.Errorf("onLost called %d times, want once", len(lost))
	}
	hb.release()
	if holderOf(getLease(t, c, "team", "demo")) != "agent-a" {
		t.Fatal("the old holder's release deleted the lease it lost")
	}

	// several packages: all or none
	other := pkgKey{"team", "other"}
	_, err = b.acquire(ctx, []pkgKey{other, demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-a")
	if l := getLease(t, c, "team", "other"); l != nil {
		t.Errorf("a refused acquire of two packages left the lease of one: %+v", l.Spec)
	}
	ha.release()
	hb, err = b.acquire(ctx, []pkgKey{other, demo}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hb.release()
	if getLease(t, c, "team", "other") != nil || getLease(t, c, "team", "demo") != nil {
		t.Error("leases left after release")
	}
}

// TestImportLocksRestartedReplica: a lease left by this replica's name
// (POD_NAME) by a process that died (its container restarted) is taken over
// at once by the new process, without waiting out its duration; one the
// new process took itself stays busy, and another replica's stays busy.
func TestImportLocksRestartedReplica(t *testing.T) {
	ctx := context.Background()
	c := fakeClient(nil)
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	old := newLocks(c, "agent-a-7d9f", clk)
	demo := pkgKey{"team", "demo"}
	if _, err := old.acquire(ctx, []pkgKey{demo}, nil); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(5 * time.Second) // the container restarts
	restarted := newLocks(c, "agent-a-7d9f", clk)
	other := newLocks(c, "agent-b-x2c4", clk)
	_, err := other.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-a-7d9f")
	h, err := restarted.acquire(ctx, []pkgKey{demo}, nil)
	if err != nil {
		t.Fatalf("the restarted replica waits on its dead process's lease: %v", err)
	}
	if l := getLease(t, c, "team", "demo"); l.Spec.LeaseTransitions == nil || *l.Spec.LeaseTransitions != 1 {
		t.Fatalf("lease after the takeover: %+v", l.Spec)
	}
	_, err = restarted.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-a-7d9f")
	h.release()
}

// TestImportLocksRace: two replicas writing the lease at once. The one
// whose create (or takeover update) comes second gets AlreadyExists (or a
// resourceVersion conflict), reads the lease again and answers
// IMPORT_IN_PROGRESS naming the first.
func TestImportLocksRace(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	demo := pkgKey{"team", "demo"}
	var c client.WithWatch
	var other *importLocks
	raced := false
	race := func() {
		if !raced {
			raced = true
			if _, err := other.acquire(ctx, []pkgKey{demo}, nil); err != nil {
				t.Fatalf("the other replica's acquire: %v", err)
			}
		}
	}
	c = fakeClient(&interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*coordinationv1.Lease); ok && holderOfObj(obj) == "agent-b" {
				race()
			}
			return cl.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*coordinationv1.Lease); ok && holderOfObj(obj) == "agent-b" {
				race()
			}
			return cl.Update(ctx, obj, opts...)
		},
	})
	other = newLocks(c, "agent-a", clk)
	b := newLocks(c, "agent-b", clk)

	// the create race
	_, err := b.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-a")

	// the takeover race: the lease expired, both take it over
	clk.t = clk.t.Add(3 * time.Minute)
	raced = false
	_, err = b.acquire(ctx, []pkgKey{demo}, nil)
	wantCode(t, err, "IMPORT_IN_PROGRESS", "agent-a")
	l := getLease(t, c, "team", "demo")
	if holderOf(l) != "agent-a" || renewed(l).Before(clk.t.Add(-time.Second)) {
		t.Errorf("lease after the takeover race: %+v", l.Spec)
	}
}

func holderOfObj(obj client.Object) string {
	l, _ := obj.(*coordinationv1.Lease)
	return holderOf(l)
}
