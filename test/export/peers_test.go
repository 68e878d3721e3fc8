package export

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/octohelm/crpe/internal/testenv"
)

// gunzip runs `gzip -dc file`.
func gunzip(ctx context.Context, t *testing.T, file string) []byte {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "gzip", "-dc", file)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("gzip -dc %s: %v\n%s", file, err, errb.String())
	}
	return out.Bytes()
}

// ctrImages parses `ctr images ls` (or `check`) into ref → fields.
func ctrImages(out string) map[string][]string {
	res := map[string][]string{}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 3 {
			continue // header
		}
		res[f[0]] = f
	}
	return res
}

// testContainerdImport: containerd 1.6 imports the archive once it is
// gunzipped (ctr images import reads a plain tar only), names the images as
// spec.images does with the exported digests, holds every blob of the chosen
// platform with the exported bytes, and unpacks a real image.
func testContainerdImport(t *testing.T, f *fixture) {
	ctx := ctxFor(t, 45*time.Second)
	ctd := testenv.StartContainerd(t)

	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	file := filepath.Join(t.TempDir(), "demo.kubepkg.tgz")
	if r := f.export(ctx, t, nil, src, file, t.TempDir()); r.err != nil {
		t.Fatalf("export: %v\n%s", r.err, r)
	}

	// containerd 1.6 does not take the gzip stream itself
	if out, err := ctd.Ctr(ctx, "images", "import", "--platform", "linux/amd64", "--no-unpack", file); err == nil {
		t.Logf("note: ctr images import took the .tgz as is: %s", out)
	} else {
		t.Logf("ctr images import of the .tgz as is fails (expected with containerd 1.6): %s", strings.TrimSpace(out))
	}
	// gzip -dc a.kubepkg.tgz | ctr images import --platform linux/amd64 --no-unpack -
	// (--no-unpack: the fixtures' configs carry made-up diff IDs)
	tarData := gunzip(ctx, t, file)
	if out, err := ctd.CtrIn(ctx, tarData, "images", "import", "--platform", "linux/amd64", "--no-unpack", "-"); err != nil {
		t.Fatalf("import: %v", err)
	} else {
		t.Logf("ctr images import: %s", strings.TrimSpace(out))
	}
	out, err := ctd.Ctr(ctx, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	imgs := ctrImages(out)
	for ref, d := range f.demoImages() {
		if im, ok := imgs[ref]; !ok || im[2] != d {
			t.Errorf("ctr images ls: %s = %v, want digest %s\n%s", ref, im, d, out)
		}
	}
	if len(imgs) != len(f.demoImages()) {
		t.Errorf("ctr images ls lists %d images, want %d\n%s", len(imgs), len(f.demoImages()), out)
	}
	// every blob of linux/amd64 is in the content store, with upstream's bytes
	out, err = ctd.Ctr(ctx, "content", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, d := range strings.Fields(out) {
		have[d] = true
	}
	for d := range f.demoWant(amd64) {
		if !have[string(d)] {
			t.Errorf("blob %s (kind %d) not in containerd's content store", d, f.kinds[d])
		}
	}
	for _, d := range []digest.Digest{f.shared.Desc.Digest, f.single.Layers[0].Desc.Digest, f.multi.blob.Desc.Digest} {
		got, err := ctd.Ctr(ctx, "content", "get", string(d))
		if err != nil || !bytes.Equal([]byte(got), f.data[d]) {
			t.Errorf("ctr content get %s: %v (%d bytes, want upstream's %d)", d, err, len(got), len(f.data[d]))
		}
	}
	// ctr images check: complete for the host platform (linux/amd64)
	out, err = ctd.Ctr(ctx, "images", "check")
	if err != nil {
		t.Fatal(err)
	}
	for ref, fields := range ctrImages(out) {
		if len(fields) < 4 || fields[3] != "complete" {
			t.Errorf("ctr images check: %s is %v", ref, fields)
		}
	}

	// a real image, unpacked into a snapshot and mounted
	realSrc := writeFile(t, "real.yaml", `apiVersion: octohelm.tech/v1alpha1
kind: KubePkg
metadata: {name: real}
spec:
  version: 1.0.0
  images: {"docker.io/library/real:1.0": ""}
`)
	realFile := filepath.Join(t.TempDir(), "real.kubepkg.tgz")
	if r := f.export(ctx, t, nil, realSrc, realFile, t.TempDir()); r.err != nil {
		t.Fatalf("export: %v\n%s", r.err, r)
	}
	if _, err := ctd.CtrIn(ctx, gunzip(ctx, t, realFile), "images", "import", "--platform", "linux/amd64",
		"--snapshotter", "native", "-"); err != nil {
		t.Fatalf("import with unpack: %v", err)
	}
	out, err = ctd.Ctr(ctx, "images", "check", "--snapshotter", "native")
	if err != nil {
		t.Fatal(err)
	}
	rf := ctrImages(out)["docker.io/library/real:1.0"]
	if len(rf) < 4 || rf[2] != string(f.real.blob.Desc.Digest) || rf[3] != "complete" || rf[len(rf)-1] != "true" {
		t.Fatalf("ctr images check: real is %v, want complete and unpacked\n%s", rf, out)
	}
	mnt := t.TempDir()
	if _, err := ctd.Ctr(ctx, "images", "mount", "--snapshotter", "native", "--platform", "linux/amd64", "docker.io/library/real:1.0", mnt); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := ctd.Ctr(uctx, "images", "unmount", "--rm", mnt); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	if b, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); err != nil || string(b) != "hello from amd64\n" {
		t.Errorf("hello.txt in the unpacked image: %q %v", b, err)
	}
}

// testSkopeo: skopeo 1.9 reads the .tgz itself (oci-archive: accepts a
// gzip-compressed tar) for the images index.json lists with OCI media types,
// and not those listed with Docker media types (its documented limit).
func testSkopeo(t *testing.T, f *fixture) {
	skopeo := testenv.Peer(t, "skopeo", "apt-get install skopeo")
	ctx := ctxFor(t, 40*time.Second)
	src := writeFile(t, "demo.yaml", f.demoYAML(bothPlatforms))
	dir := t.TempDir()
	file := filepath.Join(dir, "demo.kubepkg.tgz")
	if r := f.export(ctx, t, nil, src, file, t.TempDir()); r.err != nil {
		t.Fatalf("export: %v\n%s", r.err, r)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	run := func(args ...string) ([]byte, string, error) {
		var so, se bytes.Buffer
		cmd := exec.CommandContext(ctx, skopeo, append([]string{"--insecure-policy", "--tmpdir", tmp}, args...)...)
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		return so.Bytes(), se.String(), err
	}

	// the index, as stored (upstream's bytes)
	raw, stderr, err := run("inspect", "--raw", "oci-archive:"+file+":"+refMulti)
	if err != nil {
		t.Fatalf("skopeo inspect --raw: %v\n%s", err, stderr)
	}
	if !bytes.Equal(raw, f.multi.blob.Data) {
		t.Errorf("skopeo inspect --raw gave %d bytes, not the upstream index", len(raw))
	}
	// the gunzipped tar reads the same
	tarFile := filepath.Join(dir, "demo.kubepkg.tar")
	if err := os.WriteFile(tarFile, gunzip(ctx, t, file), 0o644); err != nil {
		t.Fatal(err)
	}
	if raw2, stderr, err := run("inspect", "--raw", "oci-archive:"+tarFile+":"+refMulti); err != nil || !bytes.Equal(raw2, raw) {
		t.Errorf("skopeo inspect --raw of the tar: %v\n%s", err, stderr)
	}

	// copy one platform of each OCI image out of it
	for _, c := range []struct {
		ref  string
		arch string
		im   testenv.Image
	}{
		{refMulti, "amd64", f.multi.images[0]},
		{refMulti, "arm64", f.multi.images[1]},
		{refPinned, "arm64", f.pinnedOld.images[1]},
		{refTmpl, "amd64", f.tmpl.images[0]},
	} {
		dst := filepath.Join(t.TempDir(), "dir")
		if _, stderr, err := run("--override-arch", c.arch, "copy", "oci-archive:"+file+":"+c.ref, "dir:"+dst); err != nil {
			t.Errorf("skopeo copy %s (%s): %v\n%s", c.ref, c.arch, err, stderr)
			continue
		}
		m, _ := os.ReadFile(filepath.Join(dst, "manifest.json"))
		if !bytes.Equal(m, c.im.Manifest.Data) {
			t.Errorf("skopeo copy %s (%s): manifest.json is not the upstream manifest\n%s", c.ref, c.arch, m)
		}
		for _, b := range append([]testenv.Blob{c.im.Config}, c.im.Layers...) {
			got, err := os.ReadFile(filepath.Join(dst, b.Desc.Digest.Encoded()))
			if err != nil || !bytes.Equal(got, b.Data) {
				t.Errorf("skopeo copy %s (%s): blob %s: %v", c.ref, c.arch, b.Desc.Digest, err)
			}
		}
	}
	// a platform the sparse index names but the archive lacks fails cleanly
	if _, stderr, err := run("--override-arch", "s390x", "copy", "oci-archive:"+file+":"+refMulti, "dir:"+filepath.Join(t.TempDir(), "d")); err == nil {
		t.Error("skopeo copied linux/s390x, which the archive does not hold")
	} else {
		t.Logf("linux/s390x (left out of the sparse index): %s", strings.TrimSpace(stderr))
	}

	// into an OCI layout, the whole chosen platform set
	layout := filepath.Join(t.TempDir(), "layout")
	if _, stderr, err := run("copy", "oci-archive:"+file+":"+refMulti, "oci:"+layout+":multi"); err != nil {
		t.Errorf("skopeo copy to oci: %v\n%s", err, stderr)
	} else {
		var idx ocispec.Index
		b, _ := os.ReadFile(filepath.Join(layout, "index.json"))
		if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != f.multi.images[0].Manifest.Desc.Digest {
			t.Errorf("oci layout index.json: %s", b)
		}
	}

	// Images kept with Docker media types (a manifest list, a schema 2
	// manifest) are listed in index.json with those types, so that their
	// digests stay upstream's. skopeo 1.9's OCI layout transport
	// (containers/image, oci/layout getManifestDescriptor) matches a
	// reference only against index.json entries typed as an OCI manifest or
	// index and skips the others: it does not find these images. Both sides
	// are asserted, so the test fails if crpe stops keeping the Docker types
	// (and digests) or if skopeo starts reading such entries.
	a := readArchive(t, data)
	for _, c := range []struct {
		ref, mediaType string
		digest         digest.Digest
	}{
		{refDlist, testenv.DockerManifestList, f.dlist.blob.Desc.Digest},
		{refSingle, testenv.DockerManifest, f.single.Manifest.Desc.Digest},
	} {
		t.Run("docker "+c.ref, func(t *testing.T) {
			var entry *ocispec.Descriptor
			for i, m := range a.index.Manifests {
				if m.Annotations[ocispec.AnnotationRefName] == c.ref {
					entry = &a.index.Manifests[i]
				}
			}
			if entry == nil || entry.MediaType != c.mediaType || entry.Digest != c.digest {
				t.Fatalf("index.json entry of %s: %+v, want media type %s and upstream's digest %s", c.ref, entry, c.mediaType, c.digest)
			}
			raw, stderr, err := run("inspect", "--raw", "oci-archive:"+file+":"+c.ref)
			if err == nil {
				t.Fatalf("skopeo inspect --raw %s read an index.json entry typed %s (%d bytes, upstream's: %v): skopeo's limit "+
					"changed, assert what it reads now", c.ref, c.mediaType, len(raw), bytes.Equal(raw, f.data[c.digest]))
			}
			// (skopeo logs the message quoted: its quotes come escaped)
			if want := fmt.Sprintf("no descriptor found for reference %q", c.ref); !strings.Contains(strings.ReplaceAll(stderr, `\"`, `"`), want) {
				t.Errorf("skopeo inspect --raw %s: %v, want the error %s\n%s", c.ref, err, want, stderr)
			}
		})
	}
}
