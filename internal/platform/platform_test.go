package platform

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseAndMatch(t *testing.T) {
	ps, err := ParseList("linux/arm64, linux/amd64,linux/amd64")
	if err != nil || Join(ps) != "linux/amd64,linux/arm64" {
		t.Fatalf("%v %v", Join(ps), err)
	}
	for _, bad := range []string{"linux", "linux/", "plan10/amd64", "linux/x86", "linux/arm/", "a/b/c/d", ""} {
		if _, err := ParseList(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	arm64, _ := Parse("linux/arm64")
	if !Match(arm64, ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}) {
		t.Error("arm64 should match arm64/v8")
	}
	arm, _ := Parse("linux/arm")
	if !Match(arm, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}) || Match(arm, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}) {
		t.Error("arm is arm/v7")
	}
	amd, _ := Parse("linux/amd64")
	if Match(amd, ocispec.Platform{OS: "windows", Architecture: "amd64"}) || Match(amd, ocispec.Platform{OS: "unknown", Architecture: "unknown"}) {
		t.Error("wrong os matched")
	}
}
