package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

// serveFile serves one file at / over HTTP on -addr (127.0.0.1:0 picks a
// port), printing the address it listens on: the loopback floor of the
// benchmarks. net/http serves a regular file with sendfile(2), so the
// bytes go from the page cache to the socket without a copy through the
// server: what moving them over loopback costs at least.
func serveFile(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	file := fs.String("file", "", "the file to serve")
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback)")
	_ = fs.Parse(args)
	if *file == "" {
		fmt.Fprintln(os.Stderr, "serve: -file is required")
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	fmt.Println(ln.Addr().String())
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, *file)
	}))
	fmt.Fprintln(os.Stderr, "serve:", err)
	return 1
}
