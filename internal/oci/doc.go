// Package oci owns the vocabulary every other package of crpe speaks about
// images: media types, parsing manifests and indexes (with sentinel errors,
// no HTTP in them), the size caps, digest validation, repository names, tags
// and references (Docker Hub folding), platforms, and the one walk of an
// image graph (Children, Walk).
//
// It is a leaf: it imports no other package of crpe. The registry maps its
// errors to OCI error codes; the store, the archive, the importer, export,
// inspect, fsck and garbage collection all parse and walk through it, so they
// agree on what an image holds.
package oci
