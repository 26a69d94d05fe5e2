package whatsapp

// The connector against the real whatsmeow client on internal/fakewa, a
// fake WhatsApp server: pairing, Signal sessions, acknowledgements and
// redelivery are WhatsApp's, not a script's.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// waWorld is a fake WhatsApp with three people: Ann (whose account the
// connector links to), Bob and Eve, and the group Family of all three.
type waWorld struct {
	srv           *fakewa.Server
	ann, bob, eve *fakewa.Phone
	family        *fakewa.Group
	// net is the network between the connector's clients and the fake.
	net *netGate

	mu      sync.Mutex
	clients []*whatsmeow.Client // every client made, in order
}

func newWAWorld(t testing.TB, opts fakewa.Options) *waWorld {
	t.Helper()
	log := testLogger(t)
	opts.Logf = func(f string, a ...any) { log.Debug(fmt.Sprintf(f, a...)) }
	srv, err := fakewa.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w := &waWorld{srv: srv, net: newNetGate(t)}
	w.ann = srv.NewPhone("15550001111", "100000000000001", "Ann")
	w.bob = srv.NewPhone("15550002222", "100000000000002", "Bob")
	w.eve = srv.NewPhone("15550006666", "100000000000006", "Eve")
	w.family = srv.NewGroup("120363000000000001", "Family", w.ann, w.bob, w.eve)
	return w
}

// onFake makes c's whatsmeow clients talk to the fake, and its fetch of
// WhatsApp Web's current version too.
func (w *waWorld) onFake(c *Connector) {
	c.web = w.net.client(w.srv)
	make := c.newClient
	c.newClient = func(dev *store.Device) waClient {
		cli := make(dev)
		wc := cli.(*whatsmeow.Client)
		w.srv.Configure(wc)
		// Before pairing whatsmeow dials with its pre-login client.
		gated := w.net.client(w.srv)
		wc.SetPreLoginHTTPClient(gated)
		wc.SetWebsocketHTTPClient(gated)
		w.mu.Lock()
		w.clients = append(w.clients, wc)
		w.mu.Unlock()
		return cli
	}
}

// testLogger logs to the test at debug when PHONEBRIDGE_TEST_LOG is set,
// and stops at the test's end (whatsmeow logs from goroutines that outlive
// it); otherwise it discards.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PHONEBRIDGE_TEST_LOG") == "" {
		return quietLog()
	}
	h := &testHandler{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() { h.mu.Lock(); *h.done = true; h.mu.Unlock() })
	return slog.New(h)
}

type testHandler struct {
	t     testing.TB
	mu    *sync.Mutex
	done  *bool
	attrs []slog.Attr
}

func (h *testHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if *h.done {
		return nil
	}
	line := r.Level.String() + " " + r.Message
	for _, a := range h.attrs {
		line += " " + a.String()
	}
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	h.t.Log(line)
	return nil
}
func (h *testHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}
func (h *testHandler) WithGroup(string) slog.Handler { return h }

// openOnFake builds the connector called name on the rig's store, its
// clients real and talking to the fake; it is stopped at cleanup.
func (r *rig) openOnFake(w *waWorld, name string, opts *Options) *Connector {
	r.t.Helper()
	if opts == nil {
		opts = rigOptions()
	}
	c, err := New(bridge.Env{Name: name, Logger: testLogger(r.t), StateDir: r.dir, Store: r.store}, opts)
	if err != nil {
		r.t.Fatalf("New(%s): %v", name, err)
	}
	w.onFake(c)
	fakeOf.Store(c, w.srv)
	r.t.Cleanup(func() {
		stopWithin(r.t, c)
		fakeOf.Delete(c)
	})
	return c
}

// fakeOf maps each connector on a fake server to it, so stopWithin lets
// the client finish its acks first (see fakewa.Server.Quiesce: whatsmeow's
// socket close races a frame being sent, which -race reports).
var fakeOf sync.Map // *Connector → *fakewa.Server

// quiesceFake waits until c's fake server, if it has one, is quiet.
func quiesceFake(c *Connector) {
	if srv, ok := fakeOf.Load(c); ok {
		srv.(*fakewa.Server).Quiesce(2 * time.Second)
	}
}

// linkByQR links c to p's account as a user does: the phone scans the
// first QR code the link shows.
func linkByQR(t testing.TB, c *Connector, p *fakewa.Phone) bridge.LinkAccount {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	scanned := make(chan error, 1)
	var once sync.Once
	acct, err := c.Link(ctx, bridge.LinkOptions{}, func(pr bridge.LinkProgress) {
		if pr.Kind == bridge.ProgressQR {
			once.Do(func() {
				go func() {
					_, err := p.ScanQR(ctx, pr.QR)
					scanned <- err
				}()
			})
		}
	})
	if err != nil {
		t.Fatalf("link: %v", err)
	}
	if err := <-scanned; err != nil {
		t.Fatalf("the phone's scan: %v", err)
	}
	return acct
}

// linkedOnFake is a connector started with a recording sink and linked to
// Ann's account on the fake, connected, its group list loaded.
func (r *rig) linkedOnFake(w *waWorld, name string, opts *Options) (*Connector, *recSink) {
	r.t.Helper()
	c := r.openOnFake(w, name, opts)
	s := r.start(c)
	linkByQR(r.t, c, w.ann)
	s.waitRelaying(r.t, 0)
	return c, s
}

// waitRelaying waits until the link is connected and has listed its
// groups since the sink had heard of chats changing n times (what
// chatsCount said before). Besides what it says, it leaves no query of
// the connector's in flight: whatsmeow's socket races a frame being sent
// with its own close (FrameSocket.SendFrame reads the connection without
// its lock), which -race reports when a test ends right then.
func (s *recSink) waitRelaying(t testing.TB, n int) {
	t.Helper()
	s.waitFor(t, "connected, its groups listed", func() bool {
		return len(s.states) > 0 && s.states[len(s.states)-1].State == bridge.StateConnected && s.chatsChg > n
	})
}

// chatsCount is how many times the sink heard that chats changed.
func (s *recSink) chatsCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chatsChg
}

// waitEvents waits until the sink holds an event that satisfies ok.
func (s *recSink) waitEvent(t testing.TB, what string, ok func(bridge.Event) bool) bridge.Event {
	t.Helper()
	var found bridge.Event
	s.waitFor(t, what, func() bool {
		for _, ev := range s.events {
			if ok(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

func textIs(text string) func(bridge.Event) bool {
	return func(ev bridge.Event) bool { return ev.Text == text }
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	t.Cleanup(cancel)
	return ctx
}

// TestRefusedMessageComesAgain: a message the core could not store is not
// acknowledged to WhatsApp, which delivers it again at the next
// connection; the client still has its plaintext (the Signal ratchet has
// moved on), so it is relayed then. Without SynchronousAck or the
// decrypted event buffer it would be lost.
func TestRefusedMessageComesAgain(t *testing.T) {
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	dev := c.dev().ID
	ctx := ctxFor(t)

	s.update(func() { s.refuse = errors.New("store the event: disk I/O error") })
	keep, _ := w.bob.SendText(ctx, w.ann.PN, "keep me")
	s.waitFor(t, "the message to be refused", func() bool { return len(s.refused) == 1 })
	// A group change refused the same way (a notification, not a message).
	w.family.SetSubject(w.srv, w.bob, "Family & friends")
	s.waitFor(t, "the group change to be refused", func() bool { return len(s.refused) == 2 })
	// Then a message the core takes: once WhatsApp has its receipt, the
	// client has answered all three.
	s.update(func() { s.refuse = nil })
	marker, _ := w.bob.SendText(ctx, w.ann.PN, "marker")
	s.waitEvent(t, "the marker", textIs("marker"))
	waitUntil(t, "the marker's receipt", func() bool { return !slices.Contains(w.srv.PendingIDs(*dev), marker) })
	// Refused, so not acknowledged: WhatsApp keeps both queued.
	if ids := w.srv.PendingIDs(*dev); len(ids) != 2 || ids[0] != keep {
		t.Fatalf("the device's offline queue holds %q after a refused message and group change, want both (%s first)", ids, keep)
	}

	w.srv.Kick(w.ann) // the connection drops; whatsmeow reconnects
	ev := s.waitEvent(t, "the message again", textIs("keep me"))
	if ev.Sender.ID != w.bob.PN.String() || ev.Chat.ID != w.bob.PN.String() {
		t.Errorf("relayed %+v, want Bob's message in Bob's chat", ev)
	}
	s.waitEvent(t, "the group change again", func(ev bridge.Event) bool { return strings.Contains(ev.Text, "Family & friends") })
	waitUntil(t, "the offline queue to empty", func() bool { return w.srv.Pending(*dev) == 0 })
	// And once only.
	n := 0
	for _, ev := range s.eventList() {
		if ev.Text == "keep me" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("relayed %d times, want once", n)
	}
}

func waitUntil(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitBound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// netGate is the network between the connector's clients and the fake:
// while down, every dial goes to a port of this host that nothing listens
// on, so the client gets the kernel's own "connection refused", as with
// WhatsApp unreachable; up, dials reach the fake again.
type netGate struct {
	closed string // host:port of a listener that was closed
	down   atomic.Bool
	dials  atomic.Int64 // dials refused while down
}

func newNetGate(t testing.TB) *netGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &netGate{closed: addr}
}

// Down cuts the network: dials from now on are refused.
func (g *netGate) Down() { g.down.Store(true) }

// Up restores it.
func (g *netGate) Up() { g.down.Store(false) }

// client is the websocket HTTP client of a whatsmeow client on srv,
// through the gate; it trusts only the fake's certificate authority.
func (g *netGate) client(srv *fakewa.Server) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			addr := srv.Addr()
			if g.down.Load() {
				g.dials.Add(1)
				addr = g.closed
			}
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: srv.PKI().CAPool},
		TLSHandshakeTimeout: 5 * time.Second,
	}}
}

// client is the n-th whatsmeow client the world's connectors made (1 is
// the first), waiting for it.
func (w *waWorld) client(t testing.TB, n int) *whatsmeow.Client {
	t.Helper()
	var cli *whatsmeow.Client
	waitUntil(t, fmt.Sprintf("client #%d", n), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.clients) >= n {
			cli = w.clients[n-1]
			return true
		}
		return false
	})
	return cli
}

// clientCount is how many whatsmeow clients the world's connectors made.
func (w *waWorld) clientCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.clients)
}

// waEvents records what a whatsmeow client dispatches. Its handler is
// added after the connector's, and whatsmeow runs one event's handlers in
// order, so an event recorded here has been handled by the connector.
type waEvents struct {
	mu      sync.Mutex
	evs     []any
	changed chan struct{}
}

func watchEvents(cli waClient) *waEvents {
	e := &waEvents{changed: make(chan struct{}, 1)}
	cli.AddEventHandlerWithSuccessStatus(func(evt any) bool {
		e.mu.Lock()
		e.evs = append(e.evs, evt)
		e.mu.Unlock()
		select {
		case e.changed <- struct{}{}:
		default:
		}
		return true
	})
	return e
}

// wait waits for an event that satisfies ok.
func (e *waEvents) wait(t testing.TB, what string, ok func(any) bool) any {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		e.mu.Lock()
		for _, evt := range e.evs {
			if ok(evt) {
				e.mu.Unlock()
				return evt
			}
		}
		e.mu.Unlock()
		select {
		case <-e.changed:
		case <-deadline:
			t.Fatalf("waited %v for %s", waitBound, what)
		}
	}
}

// nextWithin waits up to d for the next progress report (WhatsApp's own
// schedule: 20 s a QR code).
func (p *progressLog) nextWithin(t testing.TB, d time.Duration) bridge.LinkProgress {
	t.Helper()
	select {
	case lp := <-p.ch:
		return lp
	case <-time.After(d):
		t.Fatalf("no link progress within %v", d)
	}
	return bridge.LinkProgress{}
}

// awaitLinkWithin waits up to d for a background Link's result.
func awaitLinkWithin(t testing.TB, res <-chan linkResult, d time.Duration) linkResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(d):
		t.Fatalf("Link did not return within %v", d)
	}
	return linkResult{}
}

// scanFirstCode has p scan the first QR code a background Link shows,
// returning the code.
func scanFirstCode(t testing.TB, p *fakewa.Phone, pl *progressLog) string {
	t.Helper()
	lp := pl.next(t)
	if lp.Kind != bridge.ProgressQR || lp.QR == "" {
		t.Fatalf("first progress %+v, want a QR code", lp)
	}
	if _, err := p.ScanQR(ctxFor(t), lp.QR); err != nil {
		t.Fatalf("the phone's scan: %v", err)
	}
	return lp.QR
}

// stateIs is a sink condition: the last state reported is st.
func (s *recSink) stateIs(st bridge.State) func() bool {
	return func() bool { return len(s.states) > 0 && s.states[len(s.states)-1].State == st }
}

// annAt is the account the connector links to on a waWorld, as Link
// returns it: the push name comes later, with the phone's app state.
func (w *waWorld) annAt(t testing.TB, acct bridge.LinkAccount) {
	t.Helper()
	if acct.ID != w.ann.PN.String() || acct.Handle != "+"+w.ann.PN.User || acct.Device != w.ann.Platform {
		t.Errorf("linked account %+v, want %s (+%s) on %s", acct, w.ann.PN, w.ann.PN.User, w.ann.Platform)
	}
}

// companionOf is the one linked device p's phone lists.
func companionOf(t testing.TB, p *fakewa.Phone) types.JID {
	t.Helper()
	devs := p.Companions()
	if len(devs) != 1 {
		t.Fatalf("the phone lists %d linked devices (%v), want one", len(devs), devs)
	}
	return devs[0]
}

// handled waits until the connector has handled an event of type T from
// the client evs watches, and returns it.
func handled[T any](t testing.TB, evs *waEvents) T {
	t.Helper()
	var zero T
	return evs.wait(t, fmt.Sprintf("%T handled", zero), func(e any) bool { _, ok := e.(T); return ok }).(T)
}
