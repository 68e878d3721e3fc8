// Package diskfree tells how many bytes a folder's file system has free for
// an unprivileged writer, where the platform can say.
package diskfree

// Available returns the free bytes at path, or -1 when unknown.
func Available(path string) int64 { return available(path) }
