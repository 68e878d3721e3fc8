package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sampleEvery is how often /proc/PID/status is read.
const sampleEvery = 5 * time.Millisecond

// peaks holds the largest values of /proc/PID/status seen, in KiB.
type peaks struct {
	path  string
	hwm   int64 // VmHWM: the kernel's own high-water mark of total RSS
	anon  int64 // largest RssAnon sampled (heap, stacks)
	file  int64 // largest RssFile sampled (mapped binary and other files)
	rss   int64 // largest VmRSS sampled
	alive bool  // the last read found a live (not zombie) process
}

// sample reads the status file once; it reports false when the process is
// gone or a zombie (its memory already released).
func (p *peaks) sample() bool {
	b, err := os.ReadFile(p.path)
	if err != nil {
		p.alive = false
		return false
	}
	p.alive = true
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if k == "State" {
			if strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X") {
				p.alive = false
				return false
			}
			continue
		}
		var dst *int64
		switch k {
		case "VmHWM":
			dst = &p.hwm
		case "RssAnon":
			dst = &p.anon
		case "RssFile":
			dst = &p.file
		case "VmRSS":
			dst = &p.rss
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		if err == nil && n > *dst {
			*dst = n
		}
	}
	return true
}

func (p *peaks) fields() map[string]any {
	return map[string]any{"vm_hwm_kib": p.hwm, "rss_anon_kib": p.anon, "rss_file_kib": p.file, "vm_rss_kib": p.rss}
}

func writeJSON(path string, m map[string]any) error {
	b, _ := json.Marshal(m)
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

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
	// a TERM or INT (timeout(1), the script's trap) is passed on to COMMAND,
	// which then exits and is reaped below
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "imagefix watch:", err)
		return 1
	}
	// Go starts COMMAND with vfork semantics (CLONE_VM): at its exec the
	// kernel folds this process's own high-water mark into COMMAND's
	// ru_maxrss. Our VmHWM after Start is an upper bound of that.
	self := &peaks{path: "/proc/self/status"}
	self.sample()
	p := &peaks{path: fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)}
	p.sample()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case werr = <-done:
			break loop
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case <-tick.C:
			p.sample() // the last samples before exit are racy; maxrss below is exact
		}
	}
	m := p.fields()
	// the child's own rusage: ru_maxrss is its VmHWM at exit (what
	// /usr/bin/time -v reports), and its CPU time. peak_rss_kib is the
	// largest VmHWM sampled (which misses at most the last 5 ms of growth),
	// or ru_maxrss when that is larger and above what it may have inherited
	// from us (then it is COMMAND's own).
	m["peak_rss_kib"] = p.hwm
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m["maxrss_kib"] = ru.Maxrss
		if ru.Maxrss > self.hwm && ru.Maxrss > p.hwm {
			m["peak_rss_kib"] = ru.Maxrss
		}
	}
	m["user_s"] = cmd.ProcessState.UserTime().Seconds()
	m["sys_s"] = cmd.ProcessState.SystemTime().Seconds()
	if err := writeJSON(*out, m); err != nil {
		fmt.Fprintln(os.Stderr, "imagefix watch:", err)
		return 1
	}
	if werr != nil {
		if ee, ok := werr.(*exec.ExitError); ok {
			if ee.ExitCode() < 0 {
				return 128 + int(syscall.SIGTERM)
			}
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}

// sample: see the package comment.
func sampleCmd(args []string) int {
	fs := flag.NewFlagSet("sample", flag.ExitOnError)
	pid := fs.Int("p", 0, "PID to sample")
	out := fs.String("o", "", "JSON file to write")
	_ = fs.Parse(args)
	if *out == "" || *pid <= 0 || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: imagefix sample -p PID -o FILE")
		return 2
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	p := &peaks{path: fmt.Sprintf("/proc/%d/status", *pid)}
	if !p.sample() {
		fmt.Fprintf(os.Stderr, "imagefix sample: no live process %d\n", *pid)
		return 1
	}
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	exited := false
loop:
	for {
		select {
		case <-sigs:
			p.sample() // a last one, the process still running
			break loop
		case <-tick.C:
			if !p.sample() {
				exited = true
				break loop
			}
		}
	}
	m := p.fields()
	m["peak_rss_kib"] = p.hwm
	m["exited"] = exited
	if err := writeJSON(*out, m); err != nil {
		fmt.Fprintln(os.Stderr, "imagefix sample:", err)
		return 1
	}
	return 0
}
