// Package conformance runs the OCI distribution-spec conformance suite (the
// real one, built from the Go module proxy) against `crpe agent --allow-push`
// with token auth, all four workflows and every optional data set, and
// requires 0 failures and 0 skipped tests.
package conformance

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
)

const install = "go install github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"

type junitSuites struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Errors   int `xml:"errors,attr"`
	Skipped  int `xml:"skipped,attr"`
	Suites   []struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Skipped  int `xml:"skipped,attr"`
		Cases    []struct {
			Name    string    `xml:"name,attr"`
			Failure *struct{} `xml:"failure"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func TestOCIConformance(t *testing.T) {
	suite := testenv.Peer(t, "conformance", install)
	// --allow-sparse-manifests: the suite's sparse data pushes an image
	// manifest with a layer left out on purpose.
	agent := testenv.StartAgent(t, testenv.AgentOptions{Args: []string{"--allow-push", "--allow-sparse-manifests"}})
	results := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = results
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+agent.Addr,
		"OCI_TLS=disabled",
		"OCI_USERNAME=conformance",
		"OCI_PASSWORD="+agent.Token,
		"OCI_REPO1=conformance/repo1",
		"OCI_REPO2=conformance/repo2",
		"OCI_VERSION=1.1",
		"OCI_API_PULL=true",
		"OCI_API_PUSH=true",
		"OCI_DATA_SPARSE=true",
		"OCI_DATA_SHA512=true",
		"OCI_API_MANIFESTS_TAG_PARAM=true",
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_RESULTS_DIR="+results,
	)
	out, err := cmd.CombinedOutput()
	checkResults(t, results, out, err, 1000)
}

// checkResults requires the suite's junit.xml to exist (the suite exits 0
// even when its configuration fails to load) and to report at least min
// tests, none failed or skipped.
func checkResults(t *testing.T, results string, out []byte, err error, min int) {
	t.Helper()
	raw, rerr := os.ReadFile(filepath.Join(results, "junit.xml"))
	if rerr != nil {
		// the suite exits 0 even when its configuration fails to load
		t.Fatalf("conformance wrote no results (%v; exit %v):\n%s", rerr, err, out)
	}
	var j junitSuites
	if err := xml.Unmarshal(raw, &j); err != nil {
		t.Fatalf("junit.xml: %v", err)
	}
	failed, skipped, total := 0, 0, 0
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			total++
			if c.Failure != nil {
				failed++
				t.Errorf("FAIL %s", c.Name)
			}
			if c.Skipped != nil {
				skipped++
				t.Errorf("SKIPPED %s", c.Name)
			}
		}
	}
	t.Logf("OCI conformance: %d test cases, %d failed, %d skipped (junit totals: tests=%d failures=%d errors=%d skipped=%d)",
		total, failed, skipped, j.Tests, j.Failures, j.Errors, j.Skipped)
	if j.Tests < min {
		t.Errorf("only %d tests ran; expected at least %d", j.Tests, min)
	}
	if n := bytes.Count(raw, []byte("<failure")) + bytes.Count(raw, []byte("<skipped")); n != 0 {
		t.Errorf("junit.xml holds %d failure or skipped entries", n)
	}
	if j.Failures+j.Errors+j.Skipped != 0 || failed+skipped != 0 {
		t.Errorf("conformance suite reported failures or skips:\n%s", out)
	}
	if err != nil {
		t.Errorf("conformance exited with %v", err)
	}
}
