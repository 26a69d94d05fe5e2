package deadline

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The work runs at the earliest time asked for, once; a later ask does
// not delay it; the next time the work names arms it again; nothing runs
// in between, and nothing after Stop.
func TestRunsAtTheEarliestAndOnlyThen(t *testing.T) {
	var mu sync.Mutex
	var runs []time.Time
	ran := make(chan struct{}, 10)
	start := time.Now()
	again := start.Add(300 * time.Millisecond)
	tm := New(func(ctx context.Context, now time.Time) time.Time {
		mu.Lock()
		runs = append(runs, now)
		n := len(runs)
		mu.Unlock()
		ran <- struct{}{}
		if n == 1 {
			return again // the work knows of one more
		}
		return time.Time{}
	})
	defer tm.Stop()
	tm.At(start.Add(time.Hour))
	tm.At(start.Add(100 * time.Millisecond)) // earlier: wins
	tm.At(start.Add(200 * time.Millisecond)) // later than armed: changes nothing
	tm.At(time.Time{})                       // asks nothing
	for range 2 {
		select {
		case <-ran:
		case <-time.After(5 * time.Second):
			t.Fatal("the work did not run")
		}
	}
	select {
	case <-ran:
		t.Fatal("the work ran a third time; nothing asked for it")
	case <-time.After(400 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 2 || runs[0].Before(start.Add(100*time.Millisecond)) || runs[0].After(start.Add(250*time.Millisecond)) || runs[1].Before(again) {
		t.Errorf("runs at %v after start, want about 100 ms and at or after 300 ms", []time.Duration{runs[0].Sub(start), runs[len(runs)-1].Sub(start)})
	}
}

func TestStopWaitsForWorkAndDisarms(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var cancelled bool
	tm := New(func(ctx context.Context, now time.Time) time.Time {
		close(entered)
		<-release
		cancelled = ctx.Err() != nil
		return now // would run again at once, if Stop let it
	})
	tm.At(time.Now())
	<-entered
	stopped := make(chan struct{})
	go func() { tm.Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while the work ran")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-stopped
	if !cancelled {
		t.Error("the work's context was not cancelled by Stop")
	}
	tm.At(time.Now()) // after Stop: nothing runs, nothing panics
}
