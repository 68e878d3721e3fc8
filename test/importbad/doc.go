// Package importbad tests the agent's import API (PUT /api/v1/kubepkgs)
// against a real `crpe agent` process on loopback with input it must refuse
// and with the conditions it must survive:
//
//   - TestBadInput: one subtest per malformed or hostile archive (entry names,
//     entry types, content, truncations, gzip bombs, kubepkg.json problems,
//     incomplete images, bodies that are no archive, tokens). Each must get a
//     4xx JSON error naming the entry or the reason, publish nothing, write
//     nothing outside the data folder, leave the agent serving and the data
//     folder clean for `crpe fsck`; `crpe import --to` must exit non-zero and
//     print the reason.
//   - TestAcceptedVariants: what must NOT be refused (directory entries for
//     blobs/ and blobs/<alg>/, blobs already in the store left out, gzip
//     members after the archive's end).
//   - TestSemverGate: downgrades refused with 409 unless forced; the same
//     version again is idempotent.
//   - TestConcurrentImports: 4 packages and 2 copies of one archive at once.
//   - TestKillDuringImport: kill -9 at several moments of a ~150 MiB import.
//   - TestInsufficientStorage: 507 for uploads that cannot fit (a huge
//     Content-Length; a small tmpfs when mounting one is permitted).
//
// The archives are built by hand (archive/tar, compress/gzip) so that they can
// be broken in every way the format forbids.
package importbad
