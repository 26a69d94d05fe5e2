package bridge

import "time"

// Observer is told what the core does, for metrics. Its methods are
// called from many goroutines and must return at once.
type Observer interface {
	// Accepted: an inbound event from connector was committed (durable
	// kinds) or handed on (typing, read).
	Accepted(connector string, kind Kind)
	// Delivered: one Send to connector succeeded after took.
	Delivered(connector string, kind Kind, took time.Duration)
	// DeliveryFailed: one delivery to connector failed: reason is
	// "retry" (transient, tried again later), "rate_limited" (the
	// destination asked to wait), "permanent" (skipped) or "gave_up"
	// (retried for delivery.give_up_after, then skipped).
	DeliveryFailed(connector string, kind Kind, reason string)
	// StateChanged: connector's state is now state.
	StateChanged(connector string, state State)
}

// Reasons of Observer.DeliveryFailed.
const (
	FailRetry       = "retry"
	FailRateLimited = "rate_limited"
	FailPermanent   = "permanent"
	FailGaveUp      = "gave_up"
)

// NopObserver is the Observer of a bridge nobody watches; embed it to
// watch only some of what happens.
type NopObserver struct{}

func (NopObserver) Accepted(string, Kind)                 {}
func (NopObserver) Delivered(string, Kind, time.Duration) {}
func (NopObserver) DeliveryFailed(string, Kind, string)   {}
func (NopObserver) StateChanged(string, State)            {}

// SetObserver makes o watch the bridge; call it before Start.
func (b *Bridge) SetObserver(o Observer) {
	b.obs = o
	b.del.obs = o
}
