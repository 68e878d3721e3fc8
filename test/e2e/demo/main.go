//go:build linux

// Command demo is the helper of test/e2e/demo.sh (the whole air-gap story on
// one machine): it builds and pushes the story's images, pulls them through
// a pocket, prints the story's packages, and runs the one-node cluster.
//
//	demo images -push 127.0.0.1:5000        build hello:v1, hello:v2, pause:3.10; push them
//	demo pull -pocket 127.0.0.1:6060 [-data DIR]
//	                                        pull them through `crpe serve` (it caches them); with
//	                                        -data, wait until its cache (serve --data) holds them
//	demo package v1|v2                      print the KubePkg of a version
//	demo node -env FILE                     start the cluster, write FILE (KUBECONFIG=…, CERTS_D=…),
//	                                        run until SIGINT/SIGTERM, stop, check the host is as it was
//	demo sweep                              undo nodes left by killed runs
//	demo port                               print a free port on 127.0.0.1
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/octohelm/crpe/internal/testenv"
	"github.com/octohelm/crpe/test/e2e/kit"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	switch os.Args[1] {
	case "images":
		fs := flag.NewFlagSet("images", flag.ExitOnError)
		push := fs.String("push", "", "registry host:port to push to (plain HTTP)")
		_ = fs.Parse(os.Args[2:])
		err = images(ctx, *push)
	case "pull":
		fs := flag.NewFlagSet("pull", flag.ExitOnError)
		pocket := fs.String("pocket", "", "crpe serve's host:port")
		data := fs.String("data", "", "crpe serve's --data: wait until its cache holds every blob")
		_ = fs.Parse(os.Args[2:])
		err = pull(ctx, *pocket, *data)
	case "package":
		if len(os.Args) != 3 {
			usage()
		}
		var doc string
		if doc, err = kit.Package(os.Args[2]); err == nil {
			fmt.Print(doc)
		}
	case "node":
		fs := flag.NewFlagSet("node", flag.ExitOnError)
		env := fs.String("env", "", "file to write the cluster's settings to, once it is ready")
		_ = fs.Parse(os.Args[2:])
		err = node(*env)
	case "sweep":
		err = testenv.SweepStaleNodes(logf)
	case "port":
		ln, lerr := net.Listen("tcp", "127.0.0.1:0")
		if err = lerr; err == nil {
			fmt.Println(ln.Addr().(*net.TCPAddr).Port)
			ln.Close()
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: demo images -push HOST | pull -pocket HOST [-data DIR] | package v1|v2 | node -env FILE | sweep | port")
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Printf("   "+format+"\n", args...)
}

func images(ctx context.Context, push string) error {
	dir, err := os.MkdirTemp("", "crpe-demo-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	im, err := kit.Build(ctx, dir)
	if err != nil {
		return err
	}
	for _, ref := range im.Refs() {
		d, _ := im.Digest(ref)
		fmt.Printf("built %-28s %s\n", ref, d)
	}
	if push == "" {
		return nil
	}
	if err := im.Push(ctx, push); err != nil {
		return err
	}
	fmt.Printf("pushed them to %s (library/hello:v1, library/hello:v2, pause:3.10)\n", push)
	return nil
}

func pull(ctx context.Context, pocket, data string) error {
	n, err := kit.PullThrough(ctx, pocket, []string{kit.HelloV1, kit.HelloV2, kit.Pause})
	if err != nil {
		return err
	}
	fmt.Printf("pulled %s, %s, %s through %s (%.1f MiB)\n", kit.HelloV1, kit.HelloV2, kit.Pause, pocket, float64(n)/(1<<20))
	if data == "" {
		return nil
	}
	// the digests only: the images are built again (same bytes, same
	// digests) rather than carried from `demo images`
	dir, err := os.MkdirTemp("", "crpe-demo-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	im, err := kit.Build(ctx, dir)
	if err != nil {
		return err
	}
	if err := im.WaitCached(ctx, data, 20*time.Second); err != nil {
		return err
	}
	fmt.Printf("the pocket's cache %s holds every blob\n", data)
	return nil
}

func node(envFile string) error {
	bins, missing := testenv.FindNodeBins()
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, "; "))
	}
	// the signals are caught from the start: a stop asked for while the
	// cluster starts waits until it has started, then undoes it
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	n, err := testenv.LaunchNode(bins, testenv.NodeOptions{SandboxImage: kit.Pause, Logf: logf})
	if err != nil {
		return err
	}
	if envFile != "" {
		env := fmt.Sprintf("KUBECONFIG=%s\nCERTS_D=%s\nNODE_ROOT=%s\nNODE_CGROUP=%s\nCONTAINERD_SOCKET=%s\n",
			n.Kubeconfig, n.CertsD, n.Root, n.Cgroup, n.ContainerdSocket)
		if err := os.WriteFile(envFile+".tmp", []byte(env), 0o600); err == nil {
			err = os.Rename(envFile+".tmp", envFile)
		}
		if err != nil {
			_ = n.Stop()
			return err
		}
	}
	<-sig
	fmt.Println("   node: stopping")
	if err := n.Stop(); err != nil {
		return err
	}
	fmt.Println("   node: stopped; the host is as it was (no process, mount, netns, bridge, cgroup, iptables rule, sysctl change or file left)")
	return nil
}
