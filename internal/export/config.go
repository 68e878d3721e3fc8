package export

import (
	"encoding/json"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParseConfigPlatform reads os/architecture/variant of an image config; an
// unreadable config (an artifact's) yields the zero platform.
func ParseConfigPlatform(body []byte) ocispec.Platform {
	var c struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	_ = json.Unmarshal(body, &c)
	return ocispec.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}
}
