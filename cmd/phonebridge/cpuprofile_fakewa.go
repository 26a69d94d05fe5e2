//go:build fakewa

package main

// A binary built for tests (-tags fakewa) can profile its own CPU for the
// WhatsApp benchmarks (bench/whatsapp_test.go), which want the share of
// the daemon's CPU spent decrypting: with PHONEBRIDGE_CPUPROFILE=path set,
// SIGUSR2 starts a CPU profile and the next SIGUSR2 stops it and writes
// it to path (through path.tmp, renamed once complete), so the profile
// covers the measured load and not the start or the pairing. A normal
// build has none of this.

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

const envCPUProfile = "PHONEBRIDGE_CPUPROFILE"

func init() {
	path := os.Getenv(envCPUProfile)
	if path == "" {
		return
	}
	toggle := make(chan os.Signal, 1)
	signal.Notify(toggle, syscall.SIGUSR2)
	go func() {
		for range toggle {
			f, err := os.Create(path + ".tmp")
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "phonebridge: %s: cannot start the CPU profile: %v; check the path\n", envCPUProfile, err)
				if f != nil {
					f.Close()
				}
				continue
			}
			<-toggle
			pprof.StopCPUProfile()
			err = f.Close()
			if err == nil {
				err = os.Rename(path+".tmp", path)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "phonebridge: %s: cannot write the CPU profile: %v; check the disk\n", envCPUProfile, err)
			}
		}
	}()
}
