package bridge

import "time"

// SetPruneFirstAfter makes bridges started from now on run their first
// prune after d; the returned func restores the default.
func SetPruneFirstAfter(d time.Duration) (restore func()) {
	old := pruneFirstAfter
	pruneFirstAfter = d
	return func() { pruneFirstAfter = old }
}

// SetHeldHook makes fn run each time a live move of chats has paused the
// moved chats' queues, before it waits for their sends in flight.
func SetHeldHook(fn func()) (restore func()) {
	old := heldHook
	heldHook = fn
	return func() { heldHook = old }
}
