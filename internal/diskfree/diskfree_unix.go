//go:build linux || darwin || android || freebsd || netbsd || openbsd

package diskfree

import "golang.org/x/sys/unix"

func available(path string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
