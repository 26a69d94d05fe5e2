package bench

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/internal/daemontest"
)

// soakChats is how many chats the soak spreads its messages over.
const soakChats = 1000

// BenchmarkSoak relays b.N messages (`make soak`: 100,000) across 1,000
// chats through the real daemon, at most 1,024 unacknowledged, and checks
// what a long run must hold: the resident set after the second half is
// not above the first half's by more than soakGrowthMB (memory does not
// grow with the messages delivered), and the outbox drains to zero.
func BenchmarkSoak(b *testing.B) {
	onlyByName(b, "Soak", "make soak")
	r := newRig(b, soakChats)
	b.ResetTimer()
	res := soak(b, r, b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/res.took.Seconds(), "msgs/s")
	b.ReportMetric(res.atHalf, "rss-half-MB")
	b.ReportMetric(res.atEnd, "rss-end-MB")
	b.ReportMetric(res.peak, "peak-rss-MB")
}

// TestSoak is the soak's checks at a size CI has time for: 20,000
// messages across 1,000 chats (2 s, 25 s with the race detector); `make soak` runs the
// full size.
func TestSoak(t *testing.T) {
	r := newRig(t, soakChats)
	res := soak(t, r, 20000)
	t.Logf("%d messages in %v; RSS %.1f MB half way, %.1f MB at the end, peak %.1f MB", 20000, res.took.Round(time.Millisecond), res.atHalf, res.atEnd, res.peak)
}

type soakResult struct {
	took                time.Duration
	atHalf, atEnd, peak float64
}

// soak relays n messages through r, at most 1,024 unacknowledged, and
// fails tb if memory grew from half way to the end (n of 10,000 or more:
// fewer do not let the heap settle) or the outbox did not drain.
func soak(tb testing.TB, r *rig, n int) soakResult {
	pid := r.d.Pid()
	half := n / 2
	var res soakResult
	received := make(chan struct{})
	go func() {
		defer close(received)
		got := 0
		r.receive(func([]byte) bool {
			got++
			if got == half {
				res.atHalf = rssNow(tb, pid)
			}
			return got < n
		})
	}()
	start := time.Now()
	inflight := 0
	for i := 0; i < n; i++ {
		for ; inflight >= 1024; inflight-- {
			r.ack(tb)
		}
		r.send(tb, i, "soak")
		inflight++
	}
	for ; inflight > 0; inflight-- {
		r.ack(tb)
	}
	select {
	case <-received:
	case <-time.After(10 * time.Minute):
		tb.Fatal("not every message was delivered within 10 minutes")
	}
	res.took = time.Since(start)
	res.atEnd = rssNow(tb, pid)
	res.peak = peakRSS(tb, pid)
	if n >= 10000 && res.atEnd > res.atHalf+soakGrowthMB {
		tb.Errorf("RSS grew from %.1f MB at half way to %.1f MB at the end: memory grows with the messages delivered", res.atHalf, res.atEnd)
	}
	if depth := outboxDepth(tb, r); depth != 0 {
		tb.Errorf("the outbox holds %d deliveries after every message arrived, want 0", depth)
	}
	return res
}

// soakGrowthMB is the growth allowed between half way and the end: the
// Go heap and SQLite's page cache settle, they do not grow with traffic.
const soakGrowthMB = 16

// outboxDepth asks the running daemon, as `phonebridge status` does, how
// many deliveries wait; it waits for the last completions to be recorded.
func outboxDepth(b testing.TB, r *rig) int {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, stderr, code := daemontest.RunCommand(b, daemontest.Binary(b), "status", "--json", "-c", r.cfg)
		if code != 0 {
			b.Fatalf("status: %s", stderr)
		}
		var st struct {
			Outbox []struct {
				Depth int `json:"depth"`
			} `json:"outbox"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			b.Fatalf("status --json: %v", err)
		}
		depth := 0
		for _, q := range st.Outbox {
			depth += q.Depth
		}
		if depth == 0 || time.Now().After(deadline) {
			return depth
		}
		time.Sleep(100 * time.Millisecond)
	}
}
