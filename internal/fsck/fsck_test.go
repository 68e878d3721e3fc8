package fsck

import (
	"bytes"
	"context"
	"hash/crc32"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/octohelm/crpe/internal/cas"
	"github.com/octohelm/crpe/internal/casfs"
	"github.com/octohelm/crpe/internal/repodb"
)

// A CRC-32 recorded in the index that does not match the blob is a problem
// (every export of the blob would get a bad gzip trailer); --repair forgets
// it, and a right one is left alone.
func TestCRC32Records(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	index := filepath.Join(data, "index.db")
	store, err := casfs.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	good, bad := []byte("good blob"), []byte("bad blob")
	for _, b := range [][]byte{good, bad} {
		if _, err := store.Put(ctx, cas.Info{Digest: digest.FromBytes(b), Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	db, err := repodb.Open(index, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *repodb.Tx) error {
		if err := tx.SetCRC32(digest.FromBytes(good), crc32.ChecksumIEEE(good)); err != nil {
			return err
		}
		return tx.SetCRC32(digest.FromBytes(bad), crc32.ChecksumIEEE(bad)^1)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	run := func(repair bool) (Summary, []Finding) {
		var fs []Finding
		sum, err := Run(ctx, data, index, repair, func(f Finding) { fs = append(fs, f) })
		if err != nil {
			t.Fatal(err)
		}
		return sum, fs
	}
	sum, fs := run(false)
	if sum.Problems != 1 || !strings.Contains(fs[0].Message, "CRC-32") || !strings.Contains(fs[0].Where, digest.FromBytes(bad).Encoded()) {
		t.Fatalf("want one CRC-32 problem for the bad blob, got %d: %+v", sum.Problems, fs)
	}
	if _, fs = run(true); len(fs) != 1 || !fs[0].Repaired {
		t.Fatalf("repair: %+v", fs)
	}
	if sum, fs = run(false); sum.Problems != 0 {
		t.Fatalf("after repair: %+v", fs)
	}
	db, err = repodb.Open(index, true, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *repodb.Tx) error {
		if _, ok := tx.CRC32(digest.FromBytes(good)); !ok {
			t.Error("the right CRC-32 was dropped")
		}
		if _, ok := tx.CRC32(digest.FromBytes(bad)); ok {
			t.Error("the wrong CRC-32 is still recorded")
		}
		return nil
	})
}
