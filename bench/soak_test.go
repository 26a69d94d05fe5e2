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
	r := newRig(b, soakChats)
	pid := r.d.Pid()
	half := b.N / 2
	var atHalf float64
	received := make(chan struct{})
	go func() {
		defer close(received)
		n := 0
		r.receive(func([]byte) bool {
			n++
			if n == half {
				atHalf = rssNow(b, pid)
			}
			return n < b.N
		})
	}()
	b.ResetTimer()
	start := time.Now()
	inflight := 0
	for i := 0; i < b.N; i++ {
		for ; inflight >= 1024; inflight-- {
			r.ack(b)
		}
		r.send(b, i, "soak")
		inflight++
	}
	for ; inflight > 0; inflight-- {
		r.ack(b)
	}
	select {
	case <-received:
	case <-time.After(10 * time.Minute):
		b.Fatal("not every message was delivered within 10 minutes")
	}
	took := time.Since(start)
	b.StopTimer()
	atEnd := rssNow(b, pid)
	b.ReportMetric(float64(b.N)/took.Seconds(), "msgs/s")
	b.ReportMetric(atHalf, "rss-half-MB")
	b.ReportMetric(atEnd, "rss-end-MB")
	b.ReportMetric(peakRSS(b, pid), "peak-rss-MB")
	if b.N >= 10000 && atEnd > atHalf+soakGrowthMB {
		b.Errorf("RSS grew from %.1f MB at half way to %.1f MB at the end: memory grows with the messages delivered", atHalf, atEnd)
	}
	if depth := outboxDepth(b, r); depth != 0 {
		b.Errorf("the outbox holds %d deliveries after every message arrived, want 0", depth)
	}
}

// soakGrowthMB is the growth allowed between half way and the end: the
// Go heap and SQLite's page cache settle, they do not grow with traffic.
const soakGrowthMB = 16

// outboxDepth asks the running daemon, as `phonebridge status` does, how
// many deliveries wait; it waits for the last completions to be recorded.
func outboxDepth(b *testing.B, r *rig) int {
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
