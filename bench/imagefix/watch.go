package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// watch: see the package comment.
func watch(args []string) int {
	fs := flag.NewFlagSet("watch", flag.ExitOnError)
	out := fs.String("o", "", "JSON file to write")
	_ = fs.Parse(args)
	if *out == "" || fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: imagefix watch -o FILE -- COMMAND [ARGS...]")
		return 2
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "imagefix watch:", err)
		return 1
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	peak := map[string]int64{}
	sample := func() {
		b, err := os.ReadFile(status)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || (k != "VmHWM" && k != "RssAnon" && k != "RssFile") {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil && n > peak[k] {
				peak[k] = n
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case werr = <-done:
			break loop
		case <-tick.C:
			sample() // the last samples before exit are racy; VmHWM is the kernel's own peak
		}
	}
	b, _ := json.Marshal(map[string]int64{"vm_hwm_kib": peak["VmHWM"], "rss_anon_kib": peak["RssAnon"], "rss_file_kib": peak["RssFile"]})
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "imagefix watch:", err)
		return 1
	}
	if werr != nil {
		if ee, ok := werr.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}
