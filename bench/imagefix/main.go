// Command imagefix is a standard-library-only fixture generator and memory
// sampler used by bench/export.sh, bench/import.sh, bench/scale.sh,
// bench/scale-agent.sh (and, for watch and sample, bench/registry.sh): it
// pushes random OCI images straight into a registry over the OCI
// distribution API and writes the KubePkg that lists them, and probes a
// running registry.
//
//	imagefix export -registry http://127.0.0.1:5000 -pkg pkg.json -tmp DIR [-seed 1] [-big-mib 200]
//	imagefix import -registry http://127.0.0.1:5000 -pkg pkg.json -tmp DIR [-mib 400] [-seed 1]
//	imagefix watch -o FILE -- COMMAND [ARGS...]
//	imagefix sample -p PID -o FILE
//	imagefix serve -file FILE [-addr 127.0.0.1:0]
//	imagefix many -registry URL (-pkg FILE | -refs FILE) [-n 10] [-layer-kib 64] [-seed N]
//	              [-repos R] [-jobs 8] [-token T] [-timeout 150s]
//	imagefix lat -url URL -refs FILE [-token T] [-n 2000] [-method GET|HEAD] [-seed 1]
//	imagefix pages -url URL [-token T] [-path /v2/_catalog] [-n 100]
//	imagefix up -url URL/healthz [-since UNIX_SECONDS] [-timeout 60s]
//	imagefix big -registry URL -pkg FILE -mib N [-seed N]
//
// big (bench/scale-archive.sh) pushes library/big:1, one image whose one
// random layer is half of -mib, and library/small-NNN:1 images of up to 32
// random 4 MiB layers (the other half), each layer streamed as generated
// (no staging file), and writes the KubePkg listing them.
//
// many (bench/scale.sh, bench/scale-agent.sh) pushes -n single-layer
// linux/amd64 images (one random layer of -layer-kib KiB, a config and a
// manifest each: 3 blobs), -jobs at a time, with progress on stderr every
// 10 s at most. They are library/img-NNNN:1, or with -repos R spread over
// R repositories library/rep-NNN (image i is tag i/R+1 of repository i%R,
// so that a repository has many tags). -pkg writes the KubePkg listing
// them, -refs their repo:tag, one a line; -token sends "Authorization:
// Bearer T" with every request (a crpe agent's pushes need it). It prints
// one JSON line: images, repositories, blobs, bytes, seconds.
//
// lat (bench/scale-agent.sh) asks -n manifests (GET or HEAD
// /v2/REPO/manifests/TAG with a runtime's Accept headers) of refs drawn at
// random with a fixed seed from the -refs file, one after another over one
// keep-alive connection, after a few uncounted warm-up requests, and prints
// one JSON line: count, p50_ms, p99_ms, max_ms, mean_ms, errors (any
// answer but 200 is one, and makes the exit code 1).
//
// pages (bench/scale-agent.sh) pages through a listing (/v2/_catalog or
// /v2/REPO/tags/list) -n entries at a time, following the Link rel="next"
// headers until there is none, and prints one JSON line: pages, entries,
// seconds, bytes, max_page_ms.
//
// up polls a URL every 2 ms until it answers 200 and prints the seconds
// since -since (the server's start, e.g. bash's $EPOCHREALTIME taken just
// before it): a server's start-up time.
//
// serve serves one file over HTTP on loopback (net/http: sendfile), the
// address on stdout: the floor of moving bytes over loopback.
//
// export (bench/export.sh) pushes library/a:1, library/b:1 and library/c:1
// as OCI indexes of linux/amd64 + linux/arm64 (a few gzip layers of random
// bytes each, 20–40 MiB per platform), and library/big:1 as a single
// linux/amd64 OCI manifest with one random layer of -big-mib MiB. It prints
// one JSON line on stdout: the big layer's digest and size, and the total
// bytes pushed per platform.
//
// import (bench/import.sh) pushes library/a:1, library/b:1 and library/c:1,
// each a linux/amd64 OCI image manifest with a few gzip layers of random
// bytes, about -mib MiB of layers in all, split a ≈ 34%, b ≈ 33%, c ≈ 33%
// over 3–5 layers per image. It prints one JSON line on stdout: the images,
// the layer count and the bytes pushed (layers + configs + manifests).
//
// For both, content is derived from -seed, so two runs with the same seed
// push the same digests, and every layer is staged in a file under -tmp
// (removed once pushed), never held in memory whole. Layers are gzip'd
// tars stored without compression: random bytes do not compress.
//
// watch runs COMMAND (stdio passed through) and samples its
// /proc/PID/status every 5 ms, then writes one JSON line to FILE: the
// kernel's VmHWM and the largest RssAnon (heap, stacks) and RssFile
// (mapped pages of the binary and other files) seen, in KiB, with
// COMMAND's own rusage: maxrss_kib (ru_maxrss, its VmHWM at exit: what
// /usr/bin/time -v reports as its maximum resident set size), user_s and
// sys_s. peak_rss_kib is the peak total RSS to report: the larger of the
// VmHWM sampled and ru_maxrss, unless ru_maxrss could be watch's own
// high-water mark (folded in by the kernel at COMMAND's exec). A TERM or INT it receives is passed on to COMMAND. It exits with
// COMMAND's exit code.
//
// sample does the same for a process that is already running (a server the
// script started): it samples /proc/PID/status every 5 ms until the process
// exits or sample gets a TERM or INT (then it samples once more), and writes
// the same JSON line (VmHWM, the largest RssAnon, RssFile and VmRSS seen;
// "exited" tells whether the process ended first; peak_rss_kib = VmHWM).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "export":
		os.Exit(cmdExport(os.Args[2:]))
	case "import":
		os.Exit(cmdImport(os.Args[2:]))
	case "watch":
		os.Exit(watch(os.Args[2:]))
	case "sample":
		os.Exit(sampleCmd(os.Args[2:]))
	case "serve":
		os.Exit(serveFile(os.Args[2:]))
	case "big":
		os.Exit(cmdBig(os.Args[2:]))
	case "many":
		os.Exit(cmdMany(os.Args[2:]))
	case "lat":
		os.Exit(cmdLat(os.Args[2:]))
	case "pages":
		os.Exit(cmdPages(os.Args[2:]))
	case "up":
		os.Exit(cmdUp(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: imagefix export -registry URL -pkg FILE [-tmp DIR] [-seed N] [-big-mib 200]")
	fmt.Fprintln(os.Stderr, "       imagefix import -registry URL -pkg FILE [-tmp DIR] [-seed N] [-mib 400 (≥ 8)]")
	fmt.Fprintln(os.Stderr, "       imagefix watch -o FILE -- COMMAND [ARGS...]")
	fmt.Fprintln(os.Stderr, "       imagefix sample -p PID -o FILE")
	fmt.Fprintln(os.Stderr, "       imagefix serve -file FILE [-addr 127.0.0.1:0]")
	fmt.Fprintln(os.Stderr, "       imagefix many -registry URL (-pkg FILE | -refs FILE) [-n 10] [-layer-kib 64] [-seed N] [-repos R] [-jobs 8] [-token T]")
	fmt.Fprintln(os.Stderr, "       imagefix lat -url URL -refs FILE [-token T] [-n 2000] [-method GET|HEAD] [-seed 1]")
	fmt.Fprintln(os.Stderr, "       imagefix pages -url URL [-token T] [-path /v2/_catalog] [-n 100]")
	fmt.Fprintln(os.Stderr, "       imagefix up -url URL [-since UNIX_SECONDS] [-timeout 60s]")
	os.Exit(2)
}
