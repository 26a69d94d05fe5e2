// Package deadline runs work at the earliest of the times it is asked
// for, with one timer and nothing running in between: what keeps
// disappearing messages' text forgets it when they expire without
// polling an idle daemon.
package deadline

import (
	"context"
	"sync"
	"time"
)

// Timer runs its work at the earliest time asked for. The work returns
// the next time it is needed (zero: not until asked again).
type Timer struct {
	work func(ctx context.Context, now time.Time) (next time.Time)

	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	armed time.Time // when the timer fires; zero when it is not armed
	timer *time.Timer
	wg    sync.WaitGroup
}

// New returns a Timer for work, not armed.
func New(work func(ctx context.Context, now time.Time) (next time.Time)) *Timer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Timer{work: work, ctx: ctx, cancel: cancel}
}

// At asks for the work to run at when, unless it runs sooner already.
// A zero when asks nothing.
func (t *Timer) At(when time.Time) {
	if when.IsZero() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx.Err() != nil || (!t.armed.IsZero() && !when.Before(t.armed)) {
		return
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.armed = when
	t.timer = time.AfterFunc(time.Until(when), t.fire)
}

// fire runs the work once and arms the timer for the next time it needs.
func (t *Timer) fire() {
	t.mu.Lock()
	if t.ctx.Err() != nil {
		t.mu.Unlock()
		return
	}
	t.armed, t.timer = time.Time{}, nil
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()
	t.At(t.work(t.ctx, time.Now()))
}

// Stop disarms the timer and waits for work in progress, which sees its
// context cancelled.
func (t *Timer) Stop() {
	t.mu.Lock()
	t.cancel()
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Unlock()
	t.wg.Wait()
}
