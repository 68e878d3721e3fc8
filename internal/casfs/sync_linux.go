package casfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWritebackRange asks the kernel to start writing out n bytes of f's
// dirty pages at off (n 0: to the end) now, without waiting for them, so
// that the sync that makes the file durable has little left to do.
func startWritebackRange(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// syncFiles makes the named files of the store durable with one syncfs(2)
// of the store's file system (the floor's `sync -f`): one journal commit
// and one cache flush for the batch, not one per file.
func (s *Store) syncFiles(names []string) error {
	d, err := os.Open(s.root)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
