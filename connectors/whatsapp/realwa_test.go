package whatsapp

// The connector against the real whatsmeow client on internal/fakewa, a
// fake WhatsApp server: pairing, Signal sessions, acknowledgements and
// redelivery are WhatsApp's, not a script's.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// waWorld is a fake WhatsApp with three people: Ann (whose account the
// connector links to), Bob and Eve, and the group Family of all three.
type waWorld struct {
	srv           *fakewa.Server
	ann, bob, eve *fakewa.Phone
	family        *fakewa.Group
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
	w := &waWorld{srv: srv}
	w.ann = srv.NewPhone("15550001111", "100000000000001", "Ann")
	w.bob = srv.NewPhone("15550002222", "100000000000002", "Bob")
	w.eve = srv.NewPhone("15550006666", "100000000000006", "Eve")
	w.family = srv.NewGroup("120363000000000001", "Family", w.ann, w.bob, w.eve)
	return w
}

// onFake makes c's whatsmeow clients talk to the fake.
func (w *waWorld) onFake(c *Connector) {
	make := c.newClient
	c.newClient = func(dev *store.Device) waClient {
		cli := make(dev)
		w.srv.Configure(cli.(*whatsmeow.Client))
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
	r.t.Cleanup(func() { stopWithin(r.t, c) })
	return c
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
// Ann's account on the fake, connected.
func (r *rig) linkedOnFake(w *waWorld, name string, opts *Options) (*Connector, *recSink) {
	r.t.Helper()
	c := r.openOnFake(w, name, opts)
	s := r.start(c)
	linkByQR(r.t, c, w.ann)
	s.waitFor(r.t, "state connected", func() bool {
		return len(s.states) > 0 && s.states[len(s.states)-1].State == bridge.StateConnected
	})
	return c, s
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

var _ = time.Second

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
