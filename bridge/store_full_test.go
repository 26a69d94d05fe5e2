package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// awaitEmptyOutbox waits until every accepted event is delivered and
// recorded.
func awaitEmptyOutbox(t *testing.T, h *bridgetest.Harness) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := h.Store.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outbox still holds %d rows after 10s\n%s", n, h.Logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFullStoreRefusesInboundAndResumes: with the database unable to
// grow (SQLITE_FULL), an inbound event is refused with ErrCannotWrite and
// a reason naming the cause and the remedy, never accepted; the log says
// so once, however many are refused. Once it can grow, the refused events
// are accepted, and every accepted event is delivered once, in order.
func TestFullStoreRefusesInboundAndResumes(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inject := func(i int) error {
		return a.Inject(ctx, msg("a", "x", fmt.Sprint(i), fmt.Sprintf("m%03d %s", i, strings.Repeat("x", 2000))))
	}
	if err := inject(0); err != nil {
		t.Fatal(err)
	}
	b.WaitSent(t, 1)

	// Held, b's deliveries free no outbox pages the cap would let events fill.
	release := b.Block()
	defer release()
	bridgetest.CapStore(t, h.Store, 1)
	accepted := 1
	var refusal error
	for ; accepted < 500; accepted++ {
		if refusal = inject(accepted); refusal != nil {
			break
		}
	}
	if refusal == nil {
		t.Fatal("500 events of 2 KB each were accepted by a store that cannot grow")
	}
	if !errors.Is(refusal, bridge.ErrCannotWrite) {
		t.Fatalf("refused with %v, want ErrCannotWrite", refusal)
	}
	for _, want := range []string{"database or disk is full", "free space in " + filepath.Dir(h.Path)} {
		if !strings.Contains(refusal.Error(), want) {
			t.Errorf("the refusal %q does not say %q", refusal, want)
		}
	}
	for range 3 {
		if err := inject(accepted); !errors.Is(err, bridge.ErrCannotWrite) {
			t.Fatalf("a resend while the store is still full: %v, want ErrCannotWrite", err)
		}
	}
	const line = "the store cannot write: inbound events are refused"
	if n := h.Logs.Count(line); n != 1 {
		t.Errorf("the log says %q %d times for 4 refusals, want once:\n%s", line, n, h.Logs)
	}

	bridgetest.CapStore(t, h.Store, 1<<30)
	release()
	for i := accepted; i < accepted+5; i++ {
		if err := inject(i); err != nil {
			t.Fatalf("event %d once the store can grow: %v", i, err)
		}
	}
	total := accepted + 5
	sent := b.WaitSent(t, total)
	if len(sent) != total {
		t.Fatalf("b got %d events, want %d", len(sent), total)
	}
	for i, o := range sent {
		if !strings.HasPrefix(o.Text, fmt.Sprintf("m%03d ", i)) {
			t.Fatalf("b's event %d is %.4q, want m%03d (order broken, lost or doubled)", i, o.Text, i)
		}
	}
	awaitEmptyOutbox(t, h)
	// The delivery in flight when the store filled could not be recorded:
	// it alone may go again (docs/RELIABILITY.md: one per cut).
	h.AllowRepeats()
	if r := b.Repeats(); len(r) > 1 {
		t.Errorf("b was sent %v more than once, want at most the one in flight when the store filled", r)
	}
	if h.Logs.Count("the store writes again") != 1 {
		t.Errorf("the log does not say once that the store writes again:\n%s", h.Logs)
	}
}

// TestFailedWriteOfADestinationIsNotRecordedAsDelivered: a destination
// that, like the api connector, writes its own copy of what it is sent
// through the store and returns without waiting for the commit has that
// write fail. The core must not record the delivery: it sends the event
// again, with the same key and flagged MaybeSent, until the destination
// has it; nothing waits for a restart.
func TestFailedWriteOfADestinationIsNotRecordedAsDelivered(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	err := h.Store.Write(context.Background(), func(tx *bridge.Tx) error {
		_, err := tx.Exec(`CREATE TABLE dest_log (key TEXT PRIMARY KEY, text TEXT)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// b's write of "two" fails once, as one the disk refuses would.
	var failing, resent atomic.Bool
	failing.Store(true)
	store := h.Store
	b.FailWith(func(out *bridge.Outgoing) error {
		key, text := out.Key, out.Text
		if text == "two" && !failing.Load() {
			resent.Store(out.MaybeSent)
		}
		store.WriteAsync(func(tx *bridge.Tx) error {
			if text == "two" && failing.Load() {
				return errors.New("no space left on device")
			}
			_, err := tx.Exec(`INSERT OR IGNORE INTO dest_log (key, text) VALUES (?, ?)`, key, text)
			return err
		}, func(err error) {
			if err != nil {
				failing.Store(false)
			}
		})
		return nil
	})

	for i, text := range []string{"one", "two", "three"} {
		h.Inject(msg("a", "x", fmt.Sprint(i), text))
	}
	awaitEmptyOutbox(t, h)
	rows, err := h.Store.DB().Query(`SELECT text FROM dest_log ORDER BY text`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var logged []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		logged = append(logged, s)
	}
	if strings.Join(logged, ",") != "one,three,two" {
		t.Errorf("the destination holds %v, want each of one, two, three once", logged)
	}
	if failing.Load() {
		t.Error("the destination's write of \"two\" never failed: the test proves nothing")
	}
	if !resent.Load() {
		t.Error("\"two\" was not sent again flagged MaybeSent")
	}
	// The failed write took its batch with it: each of its events may go
	// again, once.
	h.AllowRepeats()
	for key, n := range b.Repeats() {
		if n > 2 {
			t.Errorf("b was sent %s %d times, want at most twice", key, n)
		}
	}
}
