package pocketapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/pocketapi"
	pt "github.com/octohelm/crpe/internal/pullthrough/pullthroughtest"
	"github.com/octohelm/crpe/internal/registry"
	"github.com/octohelm/crpe/internal/storage"
	"github.com/octohelm/crpe/internal/upstream"
)

// TestRegistrySettingsReconfigureTheCache: a registry's settings changed
// through the API while a client pulls a blob through the pocket do not
// start a second upstream fetch of it (a client asking for it after the
// change joins the fetch in flight), the pocket keeps one cache, and a miss
// after the change goes to the new endpoint with the new credentials.
func TestRegistrySettingsReconfigureTheCache(t *testing.T) {
	ctx := pt.Context(t, 60*time.Second)
	a, b := pt.NewUpstream(t), pt.NewUpstream(t)
	img := pt.Image(t, "linux/amd64", 2, 128<<10)
	a.PushImage(ctx, t, "demo/app:1.0", img)
	b.RequireAuth("dave", "hunter2")
	b.PushImage(ctx, t, "demo/app:1.0", img)
	config, layers, data := pt.Blobs(t, img)

	st, err := storage.Open(ctx, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctr := pt.NewCounter()
	api, err := pocketapi.New(ctx, pocketapi.Config{Storage: st,
		// no credentials but the stored ones (not the machine's Docker config)
		Upstream: upstream.Options{Transport: ctr, Backoff: time.Millisecond, Keychain: authn.NewMultiKeychain()}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	v2 := api.Upstreams().Cache().Handler(registry.New(st.Store, st.DB, registry.Options{}))
	mux.Handle("/v2/", v2)
	api.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = api.Upstreams().Close(cctx)
	}()

	const host = "registry.test"
	putRegistry := func(settings map[string]any) {
		t.Helper()
		body, _ := json.Marshal(settings)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, srv.URL+"/api/v1/registries/"+host, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT registry %s: HTTP %d %s", host, resp.StatusCode, msg)
		}
	}
	putRegistry(map[string]any{"endpoint": a.URL()})
	cache := api.Upstreams().Cache()
	d := layers[0]
	blobURL := srv.URL + "/v2/" + host + "/demo/app/blobs/" + string(d)
	arrived, release := a.Hold(string(d))
	defer release()
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answers := make([]answer, 2)
	start := func(i int) (wait func()) {
		return pt.Concurrently(1, func(int) {
			answers[i].status, answers[i].body, answers[i].err = pt.Get(ctx, blobURL)
		})
	}
	wait0 := start(0)
	<-arrived // the first client's fetch is in flight at the old endpoint

	putRegistry(map[string]any{"endpoint": b.URL(), "username": "dave", "password": "hunter2"})
	if api.Upstreams().Cache() != cache {
		t.Fatal("a change of registry settings built another cache")
	}
	wait1 := start(1)
	pt.WaitParked(ctx, t, "pullthrough.(*Cache).ServeBlob", 2)
	release()
	wait0()
	wait1()
	for i, an := range answers {
		if an.err != nil || an.status != http.StatusOK || !bytes.Equal(an.body, data[d]) {
			t.Fatalf("client %d: HTTP %d, %d bytes, err %v", i, an.status, len(an.body), an.err)
		}
	}
	if na, nb := ctr.Count(a.Host, http.MethodGet, "blobs"), ctr.Count(b.Host, http.MethodGet, "blobs"); na != 1 || nb != 0 {
		t.Fatalf("blob GETs: %d to the old endpoint, %d to the new one; want 1 and 0", na, nb)
	}

	// a miss after the change: the new endpoint, which wants the new
	// credentials
	status, got, err := pt.Get(ctx, srv.URL+"/v2/"+host+"/demo/app/blobs/"+string(config))
	if err != nil || status != http.StatusOK || !bytes.Equal(got, data[config]) {
		t.Fatalf("miss after the change: HTTP %d %s, err %v", status, got, err)
	}
	if n := ctr.Count(b.Host, http.MethodGet, "blobs"); n != 1 {
		t.Errorf("%d blob GETs to the new endpoint, want 1", n)
	}
	if n := ctr.Count(a.Host, http.MethodGet, "blobs"); n != 1 {
		t.Errorf("%d blob GETs to the old endpoint after the change, want none more", n)
	}
	// the client may have every byte before the commit: wait for it
	if _, err := cache.Blob(ctx, host+"/demo/app", config, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := cas.ReadAll(ctx, st.Store, config, 1<<20); err != nil {
		t.Errorf("config not cached: %v", err)
	}
	if fetches := cache.Stats.BlobFetches.Load(); fetches != 2 {
		t.Errorf("the cache counts %d blob fetches, want 2", fetches)
	}
}
