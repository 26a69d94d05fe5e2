package bench

// IRC ↔ Matrix through the real daemon at the servers' limits (issue 17):
// one ngIRCd channel joined to one Dendrite room (the IRC relay bot,
// Matrix bot mode, flood pacing and ngIRCd's penalties off), against the
// same two servers without the bridge, measured in the same run:
//
//	go test -run '^$' -bench IRCMatrix -benchtime 2000x -timeout 30m ./bench/
//
// b.N is the size of each burst; the steady runs send ircMatrixSteady
// messages at ircMatrixRate msgs/s. With PHONEBRIDGE_BENCH_PROFILES=DIR
// the daemon's CPU profile of each burst and its heap profile (with
// allocations since start) are kept there.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

const (
	ircMatrixRate   = 5
	ircMatrixSteady = 150
	ircMatrixSettle = 15 * time.Second
)

// ircMatrixRig is the daemon relaying IRC #general ↔ a Matrix room, a
// person on each side writing into it, and Ann's /sync and an IRC
// watcher counting arrivals (only the bridge's lines there, and the
// floor's). The floor chats are the same hops without the bridge: #floor
// on ngIRCd and a room of its own on Dendrite.
type ircMatrixRig struct {
	tallies
	hs            *testservers.Dendrite
	d             *daemontest.Daemon
	profile, heap string

	fromIRC, fromMatrix loadChat // into the bridged channel and room
	ircFloor, mxFloor   loadChat // the same servers, no bridge
	irc, matrix         hopFloor // measured by the floor sub-benchmark
}

// hopFloor is one server without the bridge: one person's message to
// another at ircMatrixRate, and what one sequential sender gets through.
type hopFloor struct {
	p50, p99 time.Duration
	ingest   float64 // msgs/s
	use      machineUse
}

// machineUse is what a run cost Dendrite and how busy the machine was:
// the servers, the daemon and the clients share its cores.
type machineUse struct {
	dendrite time.Duration // Dendrite's CPU
	busy     float64       // share of all cores' time not idle
}

// measureUse runs f and says what it cost Dendrite and the machine.
func (r *ircMatrixRig) measureUse(b *testing.B, f func()) machineUse {
	return measureUse(b, r.hs, f)
}

// measureUse runs f and says what it cost hs and the machine.
func measureUse(b *testing.B, hs *testservers.Dendrite, f func()) machineUse {
	pid := hs.Pid()
	cpu0 := cpuTime(b, pid)
	busy0, total0 := hostTicks(b)
	f()
	busy1, total1 := hostTicks(b)
	return machineUse{dendrite: cpuTime(b, pid) - cpu0, busy: (busy1 - busy0) / (total1 - total0)}
}

// report adds a run's machine figures for n messages.
func (u machineUse) report(b *testing.B, prefix string, n int) {
	b.ReportMetric(u.dendrite.Seconds()*1000/float64(n), prefix+"dendrite-cpu-s/1k-msgs")
	b.ReportMetric(100*u.busy, prefix+"host-busy-%")
}

// hostTicks is the machine's busy and total CPU time so far, in ticks,
// from /proc/stat (idle and iowait count as not busy).
func hostTicks(b *testing.B) (busy, total float64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		b.Fatalf("/proc/stat starts %q", line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

func newIRCMatrixRig(b *testing.B) *ircMatrixRig {
	b.Helper()
	bin := daemontest.BinaryWithTags(b, "fakewa") // for its profiles on signals
	ngircd := testservers.StartNgircd(b, testservers.NgircdOptions{})
	hs := testservers.StartDendrite(b, testservers.DendriteOptions{})
	r := &ircMatrixRig{hs: hs}
	dir := shortDir(b)
	r.profile, r.heap = filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "heap.pprof")

	ann := followAsOwner(b, hs, "ann", r.arrive)
	botID, botToken := hs.Register(b, "bridge", "bridge-password-1", false)
	created, err := ann.CreateRoom(b.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "General"})
	if err != nil {
		b.Fatal(err)
	}
	room := created.RoomID
	r.fromMatrix = loadChat{name: "Ann in " + string(room), send: func(ctx context.Context, _ int, text string) error {
		_, err := ann.SendText(ctx, room, text)
		return err
	}}
	r.mxFloor = matrixFloorChat(b, hs, ann, "floor")

	watcher := daemontest.DialIRC(b, ngircd.Addr(), "watcher", "#general")
	watcher.Send("JOIN #floor")
	watcher.Await(b, func(line string) bool { return strings.Contains(line, " JOIN ") })
	sender := daemontest.DialIRC(b, ngircd.Addr(), "bob", "#general")
	sender.Send("JOIN #floor")
	sender.Await(b, func(line string) bool { return strings.Contains(line, " JOIN ") })
	ircChat := func(channel string) loadChat {
		return loadChat{name: "bob in " + channel, send: func(_ context.Context, _ int, text string) error {
			sender.Send("PRIVMSG " + channel + " :" + text)
			return nil
		}}
	}
	r.fromIRC, r.ircFloor = ircChat("#general"), ircChat("#floor")

	mx := daemontest.MatrixRoom{BotID: id.UserID(botID), BotToken: botToken}
	cfg := filepath.Join(dir, "phonebridge.yaml")
	text := fmt.Sprintf("state_dir: ./state\nconnectors:\n"+
		"  irc:\n    type: irc\n    server: %s\n    tls: false\n    nick: wabridge\n    flood: {burst: 5, rate: -1}\n    max_lines: 0\n"+
		"%s"+
		"routes:\n  - name: general\n    endpoints:\n      - {connector: irc, chat: \"#general\"}\n      - {connector: mx, chat: \"%s\"}\n",
		ngircd.Addr(), mx.BotConnector("mx", hs), room)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	r.d = daemontest.StartEnv(b, []string{"PHONEBRIDGE_CPUPROFILE=" + r.profile, "PHONEBRIDGE_HEAPPROFILE=" + r.heap}, bin, "run", "-c", cfg)
	b.Cleanup(func() { r.d.Stop(10 * time.Second) })
	watcher.Await(b, func(line string) bool {
		return strings.HasPrefix(line, ":wabridge!") && strings.Contains(line, " JOIN ")
	})
	deadline := time.Now().Add(time.Minute)
	for {
		members, err := ann.JoinedMembers(b.Context(), room)
		if err == nil && hasMember(members, id.UserID(botID)) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the bridge's Matrix account did not join the room within a minute\n%s", r.d.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	go func() {
		for line := range watcher.Lines() {
			if strings.Contains(line, " PRIVMSG #floor ") ||
				strings.HasPrefix(line, ":wabridge!") && strings.Contains(line, " PRIVMSG #general ") {
				r.arrive(line, time.Now())
			}
		}
	}()
	// One message each way and on each floor, so rooms are joined and
	// connections warm before anything is measured.
	for _, c := range []loadChat{r.fromIRC, r.fromMatrix, r.ircFloor, r.mxFloor} {
		r.steady(b, c, 1)
	}
	return r
}

// count is the size of the sub-benchmark's burst (b.N; the function runs
// once, as with b.Loop).
func count(b *testing.B) int {
	n := 0
	for b.Loop() {
		n++
	}
	return n
}

// steady sends n messages in chat at ircMatrixRate msgs/s and returns
// their send-to-arrival times, sorted.
func (r *ircMatrixRig) steady(b *testing.B, chat loadChat, n int) []time.Duration {
	b.Helper()
	if n > 1 {
		// Dendrite digests a burst for seconds after its last message
		// shows (its internal streams): a steady run right after one
		// would measure that, and the floor's ran on a quiet server.
		time.Sleep(ircMatrixSettle)
	}
	t := r.newTally(0)
	g := newLoad(t, []loadChat{chat})
	defer g.stop()
	interval := time.Second / ircMatrixRate
	start := time.Now()
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		g.dispatch(i)
	}
	if err := t.wait(n, waWait, g); err != nil {
		b.Fatalf("%s: %v\n%s", chat.name, err, r.d.Logs())
	}
	if k := t.reordered(1); k > 0 {
		b.Fatalf("%s: %d of %d messages arrived after a later one", chat.name, k, n)
	}
	return t.latencies()
}

// burst writes n messages in chat as fast as its sender goes (an IRC
// client without waiting, a Matrix client one request at a time) and
// returns msgs/s from the first send to the last arrival. It fails on
// any message arriving after a later one.
func (r *ircMatrixRig) burst(b *testing.B, chat loadChat, n int) float64 {
	b.Helper()
	t := r.newTally(1 << 20)
	g := newLoad(t, []loadChat{chat})
	defer g.stop()
	start := time.Now()
	for i := range n {
		g.dispatch(i)
	}
	if err := t.wait(n, waWait, g); err != nil {
		b.Fatalf("%s: %v\n%s", chat.name, err, r.d.Logs())
	}
	rate := float64(n) / time.Since(start).Seconds()
	if k := t.reordered(1); k > 0 {
		b.Fatalf("%s: %d of %d messages arrived after a later one", chat.name, k, n)
	}
	return rate
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// measureFloor measures one server alone.
func (r *ircMatrixRig) measureFloor(b *testing.B, chat loadChat, n int) hopFloor {
	lat := r.steady(b, chat, ircMatrixSteady)
	h := hopFloor{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
	h.use = r.measureUse(b, func() { h.ingest = r.burst(b, chat, n) })
	return h
}

// direction measures the bridge from one side to the other: latency at
// ircMatrixRate against the two hops' floors added up, then a burst
// against the slower side's single-sender rate, with the daemon's CPU
// and memory.
func (r *ircMatrixRig) direction(b *testing.B, from loadChat, src, dst hopFloor) {
	n := count(b)
	if r.irc.ingest == 0 || r.matrix.ingest == 0 {
		b.Fatal("the floor sub-benchmark did not run: run the whole benchmark, -bench IRCMatrix")
	}
	pid := r.d.Pid()
	lat := r.steady(b, from, ircMatrixSteady)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	floor50, floor99 := src.p50+dst.p50, src.p99+dst.p99
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(floor50), "floor-p50-ms")
	b.ReportMetric(ms(p50-floor50), "p50-added-ms")
	b.ReportMetric(float64(p50)/float64(floor50), "p50-vs-floor")
	b.ReportMetric(float64(p99)/float64(floor99), "p99-vs-floor")

	os.Remove(r.profile)
	r.d.Signal(syscall.SIGUSR2) // start the daemon's CPU profile
	cpu0 := cpuTime(b, pid)
	var rate float64
	use := r.measureUse(b, func() { rate = r.burst(b, from, n) })
	cpu := cpuTime(b, pid) - cpu0
	r.d.Signal(syscall.SIGUSR2) // stop it and write it
	ceiling := min(src.ingest, dst.ingest)
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(ceiling, "ingest-msgs/s")
	b.ReportMetric(rate/ceiling, "burst-vs-ingest")
	b.ReportMetric(0, "reordered") // burst and steady fail on any
	b.ReportMetric(cpu.Seconds()*1000/float64(n), "cpu-s/1k-msgs")
	b.ReportMetric(rssNow(b, pid), "rss-MB")
	b.ReportMetric(peakRSS(b, pid), "peak-rss-MB")
	use.report(b, "", n)
	p := readProfile(b, r.profile)
	b.Logf("daemon CPU profile of the %d-message burst: %v sampled; phonebridge's SQLite %.1f%%, other SQLite %.1f%%, GC %.1f%%",
		n, p.total, 100*p.share(p.bridgeSQL), 100*p.share(p.otherSQL), 100*p.share(p.gc))
	heapDump(b, r.d, r.heap)
	keepProfile(b, r.heap, "heap")
}

// BenchmarkIRCMatrix: see the top of this file.
func BenchmarkIRCMatrix(b *testing.B) {
	onlyByName(b, "IRCMatrix", "go test -run '^$' -bench IRCMatrix -benchtime 2000x -timeout 30m ./bench/")
	r := newIRCMatrixRig(b)
	b.Run("floor", func(b *testing.B) {
		n := count(b)
		r.irc = r.measureFloor(b, r.ircFloor, n)
		r.matrix = r.measureFloor(b, r.mxFloor, n)
		for _, f := range []struct {
			name string
			hop  hopFloor
		}{{"irc", r.irc}, {"matrix", r.matrix}} {
			b.ReportMetric(ms(f.hop.p50), f.name+"-p50-ms")
			b.ReportMetric(ms(f.hop.p99), f.name+"-p99-ms")
			b.ReportMetric(f.hop.ingest, f.name+"-ingest-msgs/s")
		}
		r.matrix.use.report(b, "matrix-ingest-", n)
	})
	b.Run("irc-to-matrix", func(b *testing.B) { r.direction(b, r.fromIRC, r.irc, r.matrix) })
	b.Run("matrix-to-irc", func(b *testing.B) { r.direction(b, r.fromMatrix, r.matrix, r.irc) })
}
