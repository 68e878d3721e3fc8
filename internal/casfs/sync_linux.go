package casfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages out now
// (it does not wait for them), so that a batch's closing sync has little
// left to do while the next blob streams in.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// startWritebackRange does the same for n bytes at off.
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
