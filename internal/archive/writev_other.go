//go:build !unix

package archive

import "os"

// writev writes every byte of iov to f, one write per slice.
func writev(f *os.File, iov [][]byte) error {
	for _, b := range iov {
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	return nil
}
