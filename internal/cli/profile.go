package cli

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// startProfiles starts the profiles the environment asks for, a debugging
// aid for the benchmarks (bench/import.sh with BENCH_PROFILE=1):
// CRPE_CPUPROFILE=FILE profiles the CPU for the whole command,
// CRPE_MEMPROFILE=FILE writes the allocation profile when it ends. stop
// writes them (a server writes them once it has shut down).
func startProfiles(stderr io.Writer) (stop func()) {
	var cpu *os.File
	if path := os.Getenv("CRPE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "CRPE_CPUPROFILE:", err)
		} else {
			cpu = f
		}
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			_ = cpu.Close()
		}
		if path := os.Getenv("CRPE_MEMPROFILE"); path != "" {
			f, err := os.Create(path)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				_ = f.Close()
			}
			if err != nil {
				fmt.Fprintln(stderr, "CRPE_MEMPROFILE:", err)
			}
		}
	}
}
