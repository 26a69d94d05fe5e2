// Package bench measures the real daemon: messages go from one websocket
// API client through phonebridge (durable store and all) to another. Run:
//
//	go test -run '^$' -bench 'Relay' -benchtime 30000x ./bench/
//
// Figures are recorded in docs/BENCHMARKS.md. The clients share the
// machine with the daemon, so they are kept lean: they build frames by
// hand and classify what they receive by its first bytes.
package bench

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/internal/daemontest"
)

// rig is a running daemon with a sender on "in" and a receiver on "out".
type rig struct {
	d     *daemontest.Daemon
	snd   *websocket.Conn
	rcv   *websocket.Conn
	chats []string
	acks  chan struct{}
	cfg   string // the config file
}

func newRig(b testing.TB, chats int) *rig {
	b.Helper()
	bin := daemontest.Binary(b)
	pair := daemontest.WriteAPIPair(b, b.TempDir(), chats, "")
	d := daemontest.Start(b, bin, "run", "-c", pair.Path)
	rcv, err := daemontest.DialRaw(pair.OutAddr, daemontest.Token)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range pair.Chats {
		if err := rcv.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","chat":"`+c+`"}`)); err != nil {
			b.Fatal(err)
		}
		if _, m, err := rcv.ReadMessage(); err != nil || !bytes.HasPrefix(m, []byte(`{"type":"subscribed"`)) {
			b.Fatalf("subscribe %s: %v %s", c, err, m)
		}
	}
	snd, err := daemontest.DialRaw(pair.InAddr, daemontest.Token)
	if err != nil {
		b.Fatal(err)
	}
	r := &rig{d: d, snd: snd, rcv: rcv, chats: pair.Chats, acks: make(chan struct{}, 1<<16), cfg: pair.Path}
	go func() {
		for {
			_, m, err := snd.ReadMessage()
			if err != nil {
				close(r.acks)
				return
			}
			if !bytes.HasPrefix(m, []byte(`{"type":"ack"`)) {
				fmt.Fprintf(os.Stderr, "send refused: %s\n", m)
				continue
			}
			r.acks <- struct{}{}
		}
	}()
	b.Cleanup(func() {
		snd.Close()
		rcv.Close()
		d.Stop(10 * time.Second)
	})
	return r
}

// send writes one message event; text must need no JSON escaping.
func (r *rig) send(b testing.TB, i int, text string) {
	n := strconv.Itoa(i)
	frame := `{"type":"send","ref":"` + n + `","event":{"id":"b` + n + `","kind":"message","chat":"` + r.chats[i%len(r.chats)] +
		`","sender":{"id":"bench","name":"Bench"},"text":"` + text + `"}}`
	if err := r.snd.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		b.Fatal(err)
	}
}

func (r *rig) ack(b testing.TB) {
	select {
	case _, ok := <-r.acks:
		if !ok {
			b.Fatalf("sender connection closed\n%s", r.d.Logs())
		}
	case <-time.After(30 * time.Second):
		b.Fatalf("no ack in 30s\n%s", r.d.Logs())
	}
}

// receive calls fn with each delivered event frame until it returns false.
func (r *rig) receive(fn func(frame []byte) bool) {
	for {
		_, m, err := r.rcv.ReadMessage()
		if err != nil {
			return
		}
		if bytes.HasPrefix(m, []byte(`{"type":"event"`)) && !fn(m) {
			return
		}
	}
}

// BenchmarkRelayThroughput pushes b.N messages as fast as the daemon acks
// them (at most 1024 unacknowledged) and reports sustained msgs/s, the
// daemon's CPU time per message and its peak RSS.
func BenchmarkRelayThroughput(b *testing.B) {
	for _, chats := range []int{1, 16} {
		b.Run(fmt.Sprintf("chats=%d", chats), func(b *testing.B) {
			r := newRig(b, chats)
			received := make(chan struct{})
			go func() {
				n := 0
				r.receive(func([]byte) bool { n++; return n < b.N })
				close(received)
			}()
			cpu0, self0 := cpuTime(b, r.d.Pid()), selfCPU()
			b.ResetTimer()
			start := time.Now()
			inflight := 0
			for i := 0; i < b.N; i++ {
				for inflight >= 1024 {
					r.ack(b)
					inflight--
				}
				r.send(b, i, "throughput "+strconv.Itoa(i))
				inflight++
			}
			for ; inflight > 0; inflight-- {
				r.ack(b)
			}
			select {
			case <-received:
			case <-time.After(120 * time.Second):
				b.Fatalf("not every message arrived\n%s", r.d.Logs())
			}
			elapsed := time.Since(start)
			b.StopTimer()
			cpu, self := cpuTime(b, r.d.Pid())-cpu0, selfCPU()-self0
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
			// The load generator shares the machine's cores with the daemon.
			b.ReportMetric(float64(self.Microseconds())/float64(b.N), "client-cpu-µs/msg")
			b.ReportMetric(peakRSS(b, r.d.Pid()), "peak-rss-MB")
		})
	}
}

// BenchmarkRelayLatency sends b.N messages at a steady 1,000 msgs/s and
// reports the time from the sender writing a message to the receiver
// reading it: p50, p99 and max.
func BenchmarkRelayLatency(b *testing.B) {
	r := newRig(b, 1)
	const interval = time.Millisecond
	lat := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	marker := []byte(`"text":"t`)
	go func() {
		defer close(done)
		r.receive(func(m []byte) bool {
			at := time.Now()
			i := bytes.Index(m, marker)
			end := bytes.IndexByte(m[i+len(marker):], '"')
			sent, _ := strconv.ParseInt(string(m[i+len(marker):i+len(marker)+end]), 10, 64)
			lat = append(lat, at.Sub(time.Unix(0, sent)))
			return len(lat) < b.N
		})
	}()
	go func() {
		for range r.acks {
		}
	}()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		r.send(b, i, "t"+strconv.FormatInt(time.Now().UnixNano(), 10))
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("received %d of %d", len(lat), b.N)
	}
	b.StopTimer()
	rate := float64(b.N) / time.Since(start).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
}

// cpuTime is the process's user+system CPU time, from /proc.
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS is the process's peak resident set (VmHWM) in MB.
func peakRSS(b testing.TB, pid int) float64 { return procStatusMB(b, pid, "VmHWM:") }

// rssNow is the process's resident set now (VmRSS) in MB.
func rssNow(b testing.TB, pid int) float64 { return procStatusMB(b, pid, "VmRSS:") }

// procStatusMB reads one kB field of /proc/PID/status, in MB.
func procStatusMB(b testing.TB, pid int, field string) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field) {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}
