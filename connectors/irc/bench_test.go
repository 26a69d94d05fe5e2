package irc

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
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

// BenchmarkRelayUnderPenalties is BenchmarkRelayAPIToIRC against ngIRCd
// with its flood penalties on (about 256 bytes a second, and a second's
// penalty whenever more than 3 commands wait in its read buffer), under
// several flood settings: the rate is flood's or the server's, whichever
// is lower. It reports lines/s from the first line's arrival to the
// last's, and the barrier PINGs the bridge wrote per line. Run:
//
//	go test -run '^$' -bench RelayUnderPenalties -benchtime 60x ./connectors/irc/
func BenchmarkRelayUnderPenalties(b *testing.B) {
	for _, c := range []struct {
		name         string
		flood        string
		chats, lines int
	}{
		{}, // the floor
		{"flood=5+2/s/1-chat/5-lines", "burst: 5\n      rate: 2", 1, 5},
		{"flood=2+off/1-chat/5-lines", "burst: 2\n      rate: -1", 1, 5},
		{"flood=1+off/1-chat/5-lines", "burst: 1\n      rate: -1", 1, 5},
		{"flood=5+off/1-chat/5-lines", "burst: 5\n      rate: -1", 1, 5},
		{"flood=2+off/3-chats/1-line", "burst: 2\n      rate: -1", 3, 1},
		{"flood=2+off/1-chat/1-line", "burst: 2\n      rate: -1", 1, 1},
	} {
		if c.name == "" {
			b.Run("floor", benchPenaltyFloor)
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			r := newE2E(b, true, c.chats, "    flood:\n      "+c.flood+"\n")
			// Let the registration's penalty pass.
			time.Sleep(2 * time.Second)
			pings := r.pings.Load()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var text []string
				for l := 0; l < c.lines; l++ {
					text = append(text, fmt.Sprintf("m%d l%d", i, l))
				}
				r.api.sendAsync(b, apiEvent{ID: fmt.Sprintf("p%d", i), Chat: fmt.Sprintf("c%d", i%c.chats+1), Text: strings.Join(text, "\n")})
			}
			var first time.Time
			for n := 0; n < b.N*c.lines; n++ {
				r.obs.expect(b, "the next line", func(m *ircmsg.Message) bool { return m.Command == "PRIVMSG" && m.Nick() == "wabridge" })
				if n == 0 {
					first = time.Now()
				}
			}
			took := time.Since(first)
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				r.api.reply(b)
			}
			if b.N*c.lines > 1 {
				b.ReportMetric(float64(b.N*c.lines-1)/took.Seconds(), "lines/s")
			}
			b.ReportMetric(float64(r.pings.Load()-pings)/float64(b.N*c.lines), "pings/line")
		})
	}
}

// benchPenaltyFloor is the server's own pace, without the bridge: a plain
// client writes the same lines three at a time (what ngIRCd takes in one
// read without a penalty), each three once the observer has seen the
// last, so it never waits on a PING.
func benchPenaltyFloor(b *testing.B) {
	r := newE2E(b, true, 1, noFlood)
	sender := dialObserver(b, r.srv.Addr(), "floor", "#c1")
	time.Sleep(2 * time.Second)
	b.ResetTimer()
	var first time.Time
	for i := 0; i < b.N; i += 3 {
		var lines []string
		for j := i; j < min(i+3, b.N); j++ {
			// The bridge's lines, byte for byte: the server counts bytes.
			lines = append(lines, fmt.Sprintf("PRIVMSG #c1 :<A\u200dnn> m%d l0", j))
		}
		sender.raw(b, strings.Join(lines, "\r\n"))
		for range lines {
			r.obs.expect(b, "the floor's line", func(m *ircmsg.Message) bool { return m.Command == "PRIVMSG" && m.Nick() == "floor" })
			if first.IsZero() {
				first = time.Now()
			}
		}
	}
	took := time.Since(first)
	b.StopTimer()
	if b.N > 1 {
		b.ReportMetric(float64(b.N-1)/took.Seconds(), "lines/s")
	}
}
