package oci

// Size caps of the small documents crpe reads whole. Each exists once: every
// reader of untrusted bytes bounds its read with these.
const (
	// MaxManifestSize bounds a manifest or an index (distribution's 4 MiB).
	MaxManifestSize = 4 << 20
	// MaxIndexSize bounds an OCI layout's index.json.
	MaxIndexSize = 4 << 20
	// MaxPackageSize bounds a kubepkg.json (or one KubePkg document).
	MaxPackageSize = 8 << 20
	// MaxConfigSize bounds an image config read to learn its platform; a
	// larger config is not read (its platform is then unknown).
	MaxConfigSize = 16 << 20
	// MaxNameLength is the longest repository name accepted.
	MaxNameLength = 255
	// MaxDepth bounds how deep indexes may nest under a top index (an index
	// of indexes of ...); the walk refuses deeper graphs.
	MaxDepth = 4
)
