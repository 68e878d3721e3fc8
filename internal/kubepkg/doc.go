// Package kubepkg holds the KubePkg and KubePkgList types (apiVersion
// octohelm.tech/v1alpha1): the package format crpe carries across an air gap.
//
// It parses packages from JSON or YAML (a single KubePkg, a KubePkgList, or a
// YAML stream of either), read from a file, stdin or a deployments-center URL
// (with bearer token and ETag caching), validates them, and lists the images
// they need.
//
// Parsing is lossless for fields this package does not know: unknown
// top-level, metadata and spec fields are kept and written back by
// MarshalJSON, so a package read and written again keeps everything its author
// put in it. Every read of a package document is capped at oci.MaxPackageSize, and
// duplicate object keys (which encoding/json and most YAML decoders silently
// resolve) are rejected.
//
// The package is silent: it never logs, it returns errors.
package kubepkg
