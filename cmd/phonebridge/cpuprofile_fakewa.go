//go:build fakewa

package main

// A binary built for tests (-tags fakewa) can profile its own CPU for the
// WhatsApp benchmarks (bench/whatsapp_test.go), which want the share of
// the daemon's CPU spent decrypting: with PHONEBRIDGE_CPUPROFILE=path set,
// SIGUSR2 starts a CPU profile and the next SIGUSR2 stops it and writes
// it to path (through path.tmp, renamed once complete), so the profile
// covers the measured load and not the start or the pairing. With
// PHONEBRIDGE_HEAPPROFILE=path set, SIGUSR1 collects garbage and writes
// the live heap (inuse_space) to path and runtime.MemStats to
// path.memstats, for the idle-memory figures (issue 17). A normal build
// has none of this.

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

const (
	envCPUProfile  = "PHONEBRIDGE_CPUPROFILE"
	envHeapProfile = "PHONEBRIDGE_HEAPPROFILE"
)

func init() {
	if path := os.Getenv(envHeapProfile); path != "" {
		dump := make(chan os.Signal, 1)
		signal.Notify(dump, syscall.SIGUSR1)
		go func() {
			for range dump {
				if err := writeHeapProfile(path); err != nil {
					fmt.Fprintf(os.Stderr, "phonebridge: %s: cannot write the heap profile: %v\n", envHeapProfile, err)
				}
			}
		}()
	}
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

// writeHeapProfile writes the live heap after a collection to path and
// the runtime's own accounting to path.memstats, each through a .tmp
// file renamed once complete.
func writeHeapProfile(path string) error {
	runtime.GC()
	debug.FreeOSMemory()
	var buf []byte
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	buf = fmt.Appendf(buf, "HeapInuse %d\nHeapIdle %d\nHeapReleased %d\nHeapAlloc %d\nHeapObjects %d\nStackInuse %d\nMSpanInuse %d\nMCacheInuse %d\nBuckHashSys %d\nGCSys %d\nOtherSys %d\nSys %d\nNumGC %d\nGCCPUFraction %g\nNumGoroutine %d\n",
		ms.HeapInuse, ms.HeapIdle, ms.HeapReleased, ms.HeapAlloc, ms.HeapObjects, ms.StackInuse, ms.MSpanInuse, ms.MCacheInuse, ms.BuckHashSys, ms.GCSys, ms.OtherSys, ms.Sys, ms.NumGC, ms.GCCPUFraction, runtime.NumGoroutine())
	if err := os.WriteFile(path+".memstats.tmp", buf, 0o600); err != nil {
		return err
	}
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	err = pprof.Lookup("heap").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(path+".memstats.tmp", path+".memstats"); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
