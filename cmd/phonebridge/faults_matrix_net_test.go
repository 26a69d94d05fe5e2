package main

// The network to the Matrix homeserver fails under the real binary:
// internal/faultproxy sits between the daemon and Dendrite, while Ann,
// the test's Matrix user, talks to Dendrite directly and so sees the room
// as it is.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/faultproxy"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// matrixNetRig is the daemon's config: API "in"/general fans out to API
// "out"/general and, in bot mode through a proxy, to a Matrix room on
// Dendrite, whose messages go back to out/general.
type matrixNetRig struct {
	bin   string
	pair  daemontest.APIPair
	proxy *faultproxy.Proxy
	mx    *matrixRoom
}

// newMatrixNetRig writes the config; delivery is more of the delivery
// section, each line indented two spaces; via, if set, returns the
// address of a relay to Dendrite for the proxy to forward to.
func newMatrixNetRig(t *testing.T, delivery string, via func(hs string) string) *matrixNetRig {
	t.Helper()
	hs := testservers.StartDendrite(t, testservers.DendriteOptions{})
	room := daemontest.NewMatrixRoom(t, hs)
	target := strings.TrimPrefix(hs.URL(), "http://")
	if via != nil {
		target = via(target)
	}
	r := &matrixNetRig{bin: daemontest.Binary(t), proxy: faultproxy.Start(t, target)}
	r.mx = &matrixRoom{ann: room.Ann, room: room.Room, bot: room.BotID}
	r.pair = daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
	cfg, err := os.ReadFile(r.pair.Path)
	if err != nil {
		t.Fatal(err)
	}
	conn := strings.Replace(room.BotConnector("mx", hs), hs.URL(), "http://"+r.proxy.Addr(), 1)
	text := strings.Replace(string(cfg), "delivery:\n", "delivery:\n"+delivery, 1)
	text = strings.Replace(text, "routes:\n", conn+"routes:\n", 1) +
		"  - name: matrix\n    endpoints:\n" +
		"      - {connector: in, chat: general, direction: in}\n" +
		"      - {connector: mx, chat: \"" + string(room.Room) + "\"}\n" +
		"      - {connector: out, chat: general, direction: out}\n"
	if err := os.WriteFile(r.pair.Path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs the daemon, with a receiver on out/general and a sender on
// in/general, and relays messages [0, n) so the bot is in the room.
func (r *matrixNetRig) start(t *testing.T, n int) (*daemontest.Daemon, *apiStream, *daemontest.Client) {
	t.Helper()
	d := daemontest.Start(t, r.bin, "run", "-c", r.pair.Path)
	api := streamAPI(t, r.pair.OutAddr)
	snd := dialSubscribed(t, r.pair.InAddr, "", 0)
	sendAll(t, snd, 0, n)
	r.mx.await(t, n, 60*time.Second)
	return d, api, snd
}

// inRoom is what the bot said in the room, as Ann sees it now.
func (r *matrixNetRig) inRoom(t *testing.T) []string {
	t.Helper()
	got, err := r.mx.relayed(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// apiStream records what out/general receives and when.
type apiStream struct {
	mu    sync.Mutex
	texts []string
	at    []time.Time
	more  chan struct{} // signalled on each arrival
}

func streamAPI(t *testing.T, addr string) *apiStream {
	c := dialSubscribed(t, addr, "general", -1)
	s := &apiStream{more: make(chan struct{}, 1)}
	go func() {
		for f := range c.Events {
			s.mu.Lock()
			s.texts = append(s.texts, f.Event.Text)
			s.at = append(s.at, time.Now())
			s.mu.Unlock()
			select {
			case s.more <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

// await waits until a text that match takes has arrived.
func (s *apiStream) await(t *testing.T, limit time.Duration, match func(string) bool, d *daemontest.Daemon) {
	t.Helper()
	deadline := time.After(limit)
	for {
		s.mu.Lock()
		for _, text := range s.texts {
			if match(text) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		select {
		case <-s.more:
		case <-deadline:
			t.Fatalf("out/general: no such message within %v\n%s", limit, d.Logs())
		}
	}
}

// latencies waits for messages from on, sent at the times sent, and
// returns how long each took to reach out/general, shortest first.
func (s *apiStream) latencies(t *testing.T, from int, sent []time.Time, d *daemontest.Daemon) []time.Duration {
	t.Helper()
	last := msgText(from + len(sent) - 1)
	s.await(t, 30*time.Second, func(text string) bool { return text == last }, d)
	s.mu.Lock()
	defer s.mu.Unlock()
	at := map[string]time.Time{}
	for i, text := range s.texts {
		if _, dup := at[text]; !dup {
			at[text] = s.at[i]
		}
	}
	lat := make([]time.Duration, len(sent))
	for i := range sent {
		got, ok := at[msgText(from+i)]
		if !ok {
			t.Fatalf("out/general lacks %s\n%s", msgText(from+i), d.Logs())
		}
		lat[i] = got.Sub(sent[i])
	}
	slices.Sort(lat)
	return lat
}

// streamMessages sends messages [from, to) to in/general, each once the
// one before is acknowledged and pause has passed, and returns when each
// was sent.
func streamMessages(t *testing.T, snd *daemontest.Client, from, to int, pause time.Duration) []time.Time {
	t.Helper()
	sent := make([]time.Time, 0, to-from)
	for i := from; i < to; i++ {
		sent = append(sent, time.Now())
		sendAll(t, snd, i, i+1)
		time.Sleep(pause)
	}
	return sent
}

// matrixTimeouts counts the warnings that a send to Matrix got no answer
// within delivery.send_timeout (a delivery's first failure is a warning,
// its retries debug lines).
func matrixTimeouts(d *daemontest.Daemon) int {
	n := 0
	for _, l := range strings.Split(d.Logs(), "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, `msg="delivery delayed; will retry" destination=mx/`) &&
			strings.Contains(l, "(delivery.send_timeout)") {
			n++
		}
	}
	return n
}

// awaitTimeout waits until matrixTimeouts exceeds seen.
func awaitTimeout(t *testing.T, d *daemontest.Daemon, seen int, limit time.Duration, why string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for matrixTimeouts(d) <= seen {
		if time.Now().After(deadline) {
			t.Fatalf("no send to Matrix timed out within %v %s\n%s", limit, why, d.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tripwire is a TCP relay to target. When bytes from a client hold one of
// the marks for the first time, it calls that mark's trip before it passes
// them on, and passes them on once trip returns.
func tripwire(t *testing.T, target string, trips map[string]func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		open = nil
		mu.Unlock()
		wg.Wait()
	})
	// tripped takes the marks in b off the list and returns their trips.
	tripped := func(b []byte) []func() {
		mu.Lock()
		defer mu.Unlock()
		var due []func()
		for mark, trip := range trips {
			if bytes.Contains(b, []byte(mark)) {
				due = append(due, trip)
				delete(trips, mark)
			}
		}
		return due
	}
	relay := func(client net.Conn) {
		defer wg.Done()
		defer client.Close()
		server, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer server.Close()
		mu.Lock()
		if open == nil {
			mu.Unlock()
			return
		}
		open[client], open[server] = true, true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			var seen []byte // the last bytes too, so a mark split across reads is found
			for {
				n, err := client.Read(buf)
				if n > 0 {
					seen = append(seen[max(0, len(seen)-64):], buf[:n]...)
					for _, trip := range tripped(seen) {
						trip()
					}
					if _, err := server.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					server.(*net.TCPConn).CloseWrite() // as a real path passes a FIN on
					return
				}
			}
		}()
		io.Copy(client, server)
		mu.Lock()
		if open != nil {
			delete(open, client)
			delete(open, server)
		}
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go relay(client)
		}
	}()
	return ln.Addr().String()
}

// TestMatrixBlackHoleIsNoticedAndNothingIsDoubled: the route to the
// homeserver dies silently (no RST) twice while messages stream into the
// room, each time just as a message's send is on its way: once it has
// reached Dendrite and only the answer is lost (the event exists, the
// bridge cannot know), once the request itself is held and reaches
// Dendrite only when the route is back, alongside the bridge's retry.
// Each time the API chat gets every message promptly; the Matrix send
// times out (delivery.send_timeout 3s) and the log says so; after the
// heal every message is in the room exactly once, in order: an
// unanswered send is looked for in the room before it is repeated. Then
// the bot's /sync runs again: what Ann writes in the room reaches the API.
func TestMatrixBlackHoleIsNoticedAndNothingIsDoubled(t *testing.T) {
	const before, total = 10, 60
	type hole struct {
		at, upTo    int  // the message whose send it catches; messages sent before the heal
		holdRequest bool // the request waits for the heal too
		holed       chan time.Time
		healed      chan struct{}
		healOnce    sync.Once
	}
	holes := []*hole{
		{at: 20, upTo: 35},
		{at: 45, upTo: total, holdRequest: true},
	}
	var proxy atomic.Pointer[faultproxy.Proxy] // the rig's, set once made
	r := newMatrixNetRig(t, "  send_timeout: 3s\n", func(hs string) string {
		trips := map[string]func(){}
		for _, h := range holes {
			h.holed, h.healed = make(chan time.Time, 1), make(chan struct{})
			trips[msgText(h.at)] = func() {
				proxy.Load().BlackHole()
				h.holed <- time.Now()
				if h.holdRequest {
					<-h.healed
				}
			}
		}
		return tripwire(t, hs, trips)
	})
	proxy.Store(r.proxy)
	heal := func(h *hole) {
		r.proxy.Heal()
		h.healOnce.Do(func() { close(h.healed) })
	}
	// A failed test lets a held request go, so the tripwire can stop.
	t.Cleanup(func() {
		for _, h := range holes {
			heal(h)
		}
	})
	d, api, snd := r.start(t, before)

	var sent []time.Time
	var report []string
	from := before
	for _, h := range holes {
		// One message every 20 ms: the hole comes mid-stream.
		seen := matrixTimeouts(d)
		sent = append(sent, streamMessages(t, snd, from, h.upTo, 20*time.Millisecond)...)
		from = h.upTo
		var holedAt time.Time
		select {
		case holedAt = <-h.holed:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s was not sent to Matrix within 30s\n%s", msgText(h.at), d.Logs())
		}
		// The daemon notices: the unanswered send times out, and a
		// warning says so.
		awaitTimeout(t, d, seen, 20*time.Second, "of the black hole")
		noticed := time.Since(holedAt)
		// Ann, on Dendrite directly, sees whether the send got there.
		in := h.at + 1
		if h.holdRequest {
			in = h.at
		}
		exactlyInOrder(t, "the Matrix room during the black hole", r.inRoom(t), in)
		// The retry's search of the room is on its way when the route
		// comes back, as the held request may be.
		time.Sleep(time.Second)
		heal(h)
		healed := time.Now()
		r.mx.await(t, h.upTo, 60*time.Second)
		report = append(report, fmt.Sprintf("hole at %s (request held %v): a send timed out after %v, all %d in the room %v after the heal",
			msgText(h.at), h.holdRequest, noticed.Round(time.Millisecond), h.upTo, time.Since(healed).Round(time.Millisecond)))
	}

	// A dead homeserver held up no one else.
	worst := api.latencies(t, before, sent, d)[total-before-1]
	if worst > 2*time.Second {
		t.Errorf("out/general got a message %v after it was sent while Matrix was black-holed; want under 2s", worst)
	}

	// /sync runs again: Ann's message reaches the API. By then the
	// requests the black holes held have long reached Dendrite.
	const annSays = "ann after the heal"
	wrote := time.Now()
	if _, err := r.mx.ann.SendText(t.Context(), r.mx.room, annSays); err != nil {
		t.Fatal(err)
	}
	api.await(t, 30*time.Second, func(s string) bool { return strings.Contains(s, annSays) }, d)
	synced := time.Since(wrote)
	exactlyInOrder(t, "the Matrix room", r.inRoom(t), total)
	t.Logf("%s; worst API latency %v; Ann's message on the API after %v", strings.Join(report, "; "), worst.Round(time.Millisecond), synced.Round(time.Millisecond))
	d.Stop(5 * time.Second)
}

// TestMatrixCrawlDoesNotHoldOthers: the route to the homeserver crawls at
// a few KB a second while the same messages go to an API chat. The API
// copies arrive with low latency while Matrix falls behind; the backlog
// waits in the outbox, not in memory. The crawl then gets worse for a
// moment, so a send times out unanswered, and back to a few KB a second:
// Matrix must move on at that pace, not wait for the heal (the retry's
// search of the room for the unanswered send has to fit within
// send_timeout). After the heal every message is in the room exactly
// once, in order.
func TestMatrixCrawlDoesNotHoldOthers(t *testing.T) {
	// The room holds 100 of the bot's messages before the crawl: as many
	// as a search of the room for an earlier attempt may read.
	const before, total = 100, 300
	const rate = 3000            // bytes a second each way
	const rssLimitKB = 150 << 10 // far above the ~40 MB the daemon runs in
	// A short send_timeout keeps the moment of a timeout short.
	r := newMatrixNetRig(t, "  send_timeout: 3s\n", nil)
	d, api, snd := r.start(t, before)

	peakRSS := sampleRSS(d.Pid())
	r.proxy.Slow(rate)
	slowed := time.Now()
	// One message every 5 ms, so latency is the bridge's, not a queue in
	// front of it.
	sent := streamMessages(t, snd, before, total, 5*time.Millisecond)
	lat := api.latencies(t, before, sent, d)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	if p99 > time.Second || worst > 3*time.Second {
		t.Errorf("API latency while Matrix crawls: p50 %v, p99 %v, max %v; want p99 under 1s", p50, p99, worst)
	}
	behind := r.inRoom(t)
	crawled := time.Since(slowed)
	if len(behind)-before > (total-before)/2 {
		t.Errorf("Matrix at %d B/s got %d of %d in %v: the proxy did not slow it", rate, len(behind)-before, total-before, crawled)
	}

	// Worse for a moment: a send (about 500 bytes) times out at 100 B/s.
	r.proxy.Slow(100)
	awaitTimeout(t, d, matrixTimeouts(d), 20*time.Second, "at 100 B/s")
	r.proxy.Slow(rate)
	// The retry's search of the room for the unanswered send must fit
	// within send_timeout at this pace, or Matrix stalls until the heal.
	recovering := time.Now()
	const onward = 10
	r.mx.await(t, len(r.inRoom(t))+onward, 30*time.Second)
	moved := time.Since(recovering)

	r.proxy.Heal()
	healed := time.Now()
	r.mx.await(t, total, 60*time.Second)
	allIn := time.Since(healed)
	peak := peakRSS()
	exactlyInOrder(t, "the Matrix room", r.inRoom(t), total)
	if peak == 0 || peak > rssLimitKB {
		t.Errorf("peak VmRSS %d KiB, want above 0 and under %d KiB", peak, rssLimitKB)
	}
	t.Logf("API latency p50 %v, p99 %v, max %v; Matrix had %d of %d after %v at %d B/s; after a timeout at 100 B/s, %d more %v after going back to %d B/s; all %v after the heal; peak VmRSS %d KiB",
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond), len(behind)-before, total-before, crawled.Round(time.Millisecond), rate,
		onward, moved.Round(time.Millisecond), rate, allIn.Round(time.Millisecond), peak)
	d.Stop(5 * time.Second)
}

// TestStopWhileTheHomeserverIsSilent: SIGTERM while a send to a
// black-holed homeserver waits for its answer (send_timeout is the
// default 30s, longer than the stop's budget). The daemon cancels the
// send and exits cleanly, within its stop budget, saying the delivery was
// unanswered; the event stays in the outbox. Started again with the route
// healed, it looks for the send before repeating it: the message is in
// the room exactly once.
func TestStopWhileTheHomeserverIsSilent(t *testing.T) {
	const before = 3
	r := newMatrixNetRig(t, "", nil)
	d, _, snd := r.start(t, before)
	r.proxy.BlackHole()
	sendAll(t, snd, before, before+1)
	time.Sleep(time.Second) // the send is on its way into the hole
	took := d.Stop(15 * time.Second)
	if !strings.Contains(d.Logs(), "stopped with deliveries unanswered") {
		t.Errorf("no word of the unanswered delivery in the log:\n%s", d.Logs())
	}

	r.proxy.Heal()
	d2 := daemontest.Start(t, r.bin, "run", "-c", r.pair.Path)
	r.mx.await(t, before+1, 60*time.Second)
	// A later message proves the queue moved past it; then count.
	snd2 := dialSubscribed(t, r.pair.InAddr, "", 0)
	sendAll(t, snd2, before+1, before+2)
	r.mx.await(t, before+2, 60*time.Second)
	exactlyInOrder(t, "the Matrix room", r.inRoom(t), before+2)
	t.Logf("stopped %v after SIGTERM with a send unanswered", took.Round(time.Millisecond))
	d2.Stop(5 * time.Second)
}
