package webui

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/octohelm/crpe/internal/testenv"
	pt "github.com/octohelm/crpe/test/pockettest"
)

// TestAgentUI: the agent's page on a phone. An agent without Kubernetes
// access shows its packages with no cluster state and makes no failing
// request; a kubepkg.tgz (made by a pocket) is uploaded from the browser,
// the page asking for the token, with progress; the package and its history
// show; the nodes' configuration is rendered.
func TestAgentUI(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 256*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	ag := testenv.StartAgent(t, testenv.AgentOptions{})

	// a kubepkg.tgz from the pocket
	file := filepath.Join(t.TempDir(), "demo-1.0.0.kubepkg.tgz")
	if err := os.WriteFile(file, demoArchive(t, p.URL), 0o644); err != nil {
		t.Fatal(err)
	}

	b := NewBrowser(t, 2*time.Minute)
	ms := b.Load(ag.URL + "/")
	sent := b.Transferred()
	pt.Figure(t, "agent_first_load_bytes", sent)
	pt.Figure(t, "agent_first_load_ms", ms)
	if sent > 300*kib {
		t.Errorf("the first load transferred %.0f bytes, want < 300 KiB", sent)
	}
	b.WaitText(`#packages`, "No package imported yet", 5*time.Second)
	b.WaitText(`#cluster-note`, "no Kubernetes access", 5*time.Second)
	b.WaitText(`#mirror-config`, "hosts.toml", 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("fresh start: %v", probs)
	}
	if b.Requested("/api/v1/cluster/") {
		t.Fatal("an agent without Kubernetes access was asked for the cluster state")
	}
	b.CheckPhoneLayout("empty agent")

	// upload: the page asks for the token first
	b.Run("choose the file",
		chromedp.SetUploadFiles(`#upload-file`, []string{file}, chromedp.ByQuery))
	b.WaitText(`#upload-status`, "demo-1.0.0.kubepkg.tgz", 5*time.Second)
	b.Run("upload",
		chromedp.Click(`#upload-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#token-dialog[open]`, chromedp.ByQuery),
		chromedp.SetValue(`#token-input`, ag.Token, chromedp.ByQuery),
		chromedp.Click(`#token-dialog button[type=submit]`, chromedp.ByQuery))
	txt := b.WaitText(`#upload-status`, "Imported demo 1.0.0", 60*time.Second)
	if !strings.Contains(txt, "blobs received") {
		t.Errorf("upload status: %q", txt)
	}
	b.WaitText(`#packages article[data-name="demo"]`, "1.0.0", 10*time.Second)
	b.Run("history",
		chromedp.Click(`#packages article[data-name="demo"] summary`, chromedp.ByQuery))
	b.WaitText(`#packages article[data-name="demo"] details`, "1.0.0", 10*time.Second)
	b.Run("k3s", chromedp.SetValue(`#mirror-format`, "k3s", chromedp.ByQuery),
		chromedp.Evaluate(`document.getElementById('mirror-format').dispatchEvent(new Event('change'))`, nil))
	b.WaitText(`#mirror-config`, "registries.yaml", 10*time.Second)
	b.WaitText(`#mirror-config`, ag.URL, 10*time.Second)
	b.CheckPhoneLayout("agent with a package")
	b.Run("top", chromedp.Evaluate(`window.scrollTo(0, 0)`, nil))
	b.Shot("agent")
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("problems along the way: %v", probs)
	}

	// a token the agent refuses: the upload is refused with a clear message
	b.Run("bad token", chromedp.Evaluate(`localStorage.setItem('crpe.agent.token', 'wrong')`, nil))
	b.Run("upload again",
		chromedp.SetUploadFiles(`#upload-file`, []string{file}, chromedp.ByQuery),
		chromedp.Click(`#upload-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#token-dialog[open]`, chromedp.ByQuery),
		chromedp.Click(`#token-dialog .cancel`, chromedp.ByQuery))
	b.WaitText(`#upload-errors`, "invalid token", 10*time.Second)
	b.Problems() // the 401 is expected
	// reopened with that token stored: it is forgotten, the page reads fine
	b.Run("bad token stored", chromedp.Evaluate(`localStorage.setItem('crpe.agent.token', 'wrong')`, nil))
	b.Load(ag.URL + "/")
	b.WaitText(`#packages`, "demo", 10*time.Second)
	var stored string
	b.Eval(`localStorage.getItem('crpe.agent.token') || ''`, &stored)
	if stored != "" {
		t.Errorf("a refused token is still stored")
	}
}

// TestAgentUICluster: an agent with Kubernetes access (a real
// kube-apiserver) and the operator running shows each package's Applied
// and Ready state.
func TestAgentUICluster(t *testing.T) {
	testenv.Crpe(t)
	k := testenv.StartKube(t)
	f := pt.NewFixture(t, 64*kib)
	p := pt.StartPocket(t, f.Proxy.URL)
	ctx := testenv.WaitCtx(t, 3*time.Minute)

	op := testenv.Start(t, "operator", "--kubeconfig", k.Kubeconfig, "--health-addr", "0", "--resync", "5s", "--log-format", "text")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := k.Kubectl(ctx, "get", "crd", "kubepkgs.octohelm.tech"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the operator did not install the CRD:\n%s", op.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	ag := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--kubeconfig", k.Kubeconfig}})
	pt.Call(t, "POST", p.URL+"/api/v1/agents", map[string]string{"name": "cluster", "url": ag.URL, "token": ag.Token}).Must(t, 201)
	pt.Call(t, "POST", p.URL+"/api/v1/kubepkgs", pt.Package("demo", "1.0.0", "docker.io/library/app:1.0", "linux/amd64")).Must(t, 201)
	ev := pt.Subscribe(t, p.URL)
	var j pt.Job
	pt.Call(t, "POST", p.URL+"/api/v1/kubepkgs/demo/send?agent=cluster", nil).Must(t, 202).JSON(t, &j)
	if x := ev.WaitJob(t, j.ID, 60*time.Second); x.State != "done" {
		t.Fatalf("send: %+v", x)
	}

	b := NewBrowser(t, 2*time.Minute)
	b.Load(ag.URL + "/")
	b.WaitText(`#packages article[data-name="demo"] .cluster-state`, "Applied: yes", 60*time.Second)
	b.WaitText(`#packages article[data-name="demo"] .cluster-state`, "Ready:", 5*time.Second)
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	b.CheckPhoneLayout("agent with cluster state")
	b.Shot("agent-cluster")
}

// TestAgentUISignatures: an agent that checks signatures (--verify-key)
// shows, after an upload from the browser, how many images were verified
// and with which key, on the upload's status, the package's card and its
// history.
func TestAgentUISignatures(t *testing.T) {
	testenv.Crpe(t)
	f := pt.NewFixture(t, 64*kib)
	cs := testenv.StartCosign(t)
	key, pub := cs.KeyPair(t, "site")
	host := strings.TrimPrefix(f.Up.URL, "http://")
	d := testenv.TagDigest(t, http.DefaultClient, f.Up.URL, "library/app", "1.0")
	cs.Sign(t, host+"/library/app@"+d, key)

	p := pt.StartPocket(t, f.Proxy.URL)
	ag := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--verify-key", pub}})
	file := filepath.Join(t.TempDir(), "demo-1.0.0.kubepkg.tgz")
	if err := os.WriteFile(file, demoArchive(t, p.URL), 0o644); err != nil {
		t.Fatal(err)
	}

	b := NewBrowser(t, 2*time.Minute)
	b.Load(ag.URL + "/")
	b.Run("token", chromedp.Evaluate(`localStorage.setItem('crpe.agent.token', '`+ag.Token+`')`, nil))
	b.Load(ag.URL + "/")
	b.WaitText(`#packages`, "No package imported yet", 5*time.Second)
	b.Run("upload",
		chromedp.SetUploadFiles(`#upload-file`, []string{file}, chromedp.ByQuery),
		chromedp.Click(`#upload-submit`, chromedp.ByQuery))
	b.WaitText(`#upload-status`, "Signatures: 1/1 images verified", 60*time.Second)
	card := `#packages article[data-name="demo"]`
	b.WaitText(card+" .signatures-state", "Signed: 1/1 images", 10*time.Second)
	b.WaitText(card+" .signatures-state", "site.pub", 10*time.Second)
	b.Run("history", chromedp.Click(card+" summary", chromedp.ByQuery))
	b.WaitText(card+" details", "signatures: docker.io/library/app:1.0 ✓ sha256:", 10*time.Second)
	b.CheckPhoneLayout("agent with a signed package")
	if probs := b.Problems(); len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
}
