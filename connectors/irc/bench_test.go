package irc

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The relay benchmarks run the real core with the api connector and this
// connector against ngIRCd (no penalties, flood control off), the clients
// in this process. Run:
//
//	go test -run '^$' -bench Relay -benchtime 5000x ./connectors/irc/

// BenchmarkRelayAPIToIRC sends b.N messages from an API client (at most
// 1024 unacknowledged) and reports the rate at which they reach an IRC
// client in the channel. Each line waits for the server's confirmation.
func BenchmarkRelayAPIToIRC(b *testing.B) {
	r := newE2E(b, false, 1, noFlood)
	received := make(chan struct{})
	go func() {
		defer close(received)
		for n := 0; n < b.N; {
			m := <-r.obs.lines
			if fromBridge("#c1")(m) {
				n++
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	inflight := 0
	for i := 0; i < b.N; i++ {
		for ; inflight >= 1024; inflight-- {
			r.api.reply(b)
		}
		r.api.sendAsync(b, apiEvent{ID: fmt.Sprintf("b%d", i), Chat: "c1", Text: fmt.Sprintf("bench %d", i)})
		inflight++
	}
	for ; inflight > 0; inflight-- {
		r.api.reply(b)
	}
	select {
	case <-received:
	case <-time.After(5 * time.Minute):
		b.Fatal("not every message reached IRC")
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkRelayIRCToAPI has an IRC client say b.N lines in the channel
// and reports the rate at which they reach an API client.
func BenchmarkRelayIRCToAPI(b *testing.B) {
	r := newE2E(b, false, 1, noFlood)
	received := make(chan struct{})
	go func() {
		defer close(received)
		for n := 0; n < b.N; {
			if f := <-r.api.events; f.Chat == "c1" {
				n++
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	const batch = 64
	for i := 0; i < b.N; i += batch {
		var lines []string
		for j := i; j < min(i+batch, b.N); j++ {
			lines = append(lines, fmt.Sprintf("PRIVMSG #c1 :bench %d", j))
		}
		r.obs.raw(b, strings.Join(lines, "\r\n"))
	}
	select {
	case <-received:
	case <-time.After(5 * time.Minute):
		b.Fatal("not every line reached the API")
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkRelayLatency sends one message at a time and reports the
// median and 99th percentile of the time until it arrives on the other
// side, API → IRC and IRC → API: what one person waits for another's line.
func BenchmarkRelayLatency(b *testing.B) {
	r := newE2E(b, false, 1, noFlood)
	report := func(b *testing.B, took []time.Duration) {
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	}
	sent := 0 // ids stay unique across the runs b.Run makes: the API drops a repeated id
	b.Run("api-to-irc", func(b *testing.B) {
		took := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			sent++
			start := time.Now()
			r.api.sendAsync(b, apiEvent{ID: fmt.Sprintf("l%d", sent), Chat: "c1", Text: fmt.Sprintf("latency %d", sent)})
			for m := <-r.obs.lines; !fromBridge("#c1")(m); m = <-r.obs.lines {
			}
			took = append(took, time.Since(start))
			r.api.reply(b)
		}
		report(b, took)
	})
	b.Run("irc-to-api", func(b *testing.B) {
		took := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			start := time.Now()
			r.obs.raw(b, fmt.Sprintf("PRIVMSG #c1 :latency %d", i))
			for f := <-r.api.events; f.Chat != "c1"; f = <-r.api.events {
			}
			took = append(took, time.Since(start))
		}
		report(b, took)
	})
}
