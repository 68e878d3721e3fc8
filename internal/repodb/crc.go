package repodb

import (
	"encoding/binary"

	"github.com/opencontainers/go-digest"
)

// bCRC32 maps a blob's digest to the IEEE CRC-32 of its bytes. An export
// frames layers in stored gzip blocks, whose trailer needs the CRC-32 of
// everything in the member: with each layer's CRC-32 at hand, the layer's
// bytes are copied file to file inside the kernel instead of being read to
// compute it. Content-addressed, so an entry is true for as long as any blob
// has that digest; entries of deleted blobs are dropped with them.
var bCRC32 = []byte("crc32")

// SetCRC32 records the CRC-32 of blob d.
func (t *Tx) SetCRC32(d digest.Digest, crc uint32) error {
	b, err := t.tx.CreateBucketIfNotExists(bCRC32)
	if err != nil {
		return err
	}
	return b.Put([]byte(d), binary.BigEndian.AppendUint32(nil, crc))
}

// CRC32 returns the recorded CRC-32 of blob d, if any.
func (t *Tx) CRC32(d digest.Digest) (uint32, bool) {
	b := t.tx.Bucket(bCRC32)
	if b == nil {
		return 0, false
	}
	v := b.Get([]byte(d))
	if len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

// DeleteCRC32 forgets the CRC-32 of blob d (deleted from the store).
func (t *Tx) DeleteCRC32(d digest.Digest) error {
	b := t.tx.Bucket(bCRC32)
	if b == nil {
		return nil
	}
	return b.Delete([]byte(d))
}
