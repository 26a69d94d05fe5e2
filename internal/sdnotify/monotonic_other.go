//go:build !linux

package sdnotify

// monotonicUsec: systemd runs only on Linux.
func monotonicUsec() int64 { return 0 }
