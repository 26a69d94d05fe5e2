package bridge

import "time"

// SetPruneFirstAfter makes bridges started from now on run their first
// prune after d; the returned func restores the default.
func SetPruneFirstAfter(d time.Duration) (restore func()) {
	old := pruneFirstAfter
	pruneFirstAfter = d
	return func() { pruneFirstAfter = old }
}
