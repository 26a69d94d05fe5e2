package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
)

// TestLogKeepsOrderWhenAnAppendFails: an event's append to the chat's log
// fails because the store cannot grow (SQLITE_FULL). Send has returned
// already, so the core learns of it only through Store.FailedWrites and
// sends the event again; the next event (its After the failed one) must
// not be logged before it, or subscribers would see the chat out of
// order.
func TestLogKeepsOrderWhenAnAppendFails(t *testing.T) {
	h := newHarness(t, nil)
	ws := h.dial()
	subscribe(t, ws, "general", nil)
	// send delivers as the core does, naming the key sent before; Send
	// may or may not see its append fail before it returns: the core
	// sends again in both cases.
	send := func(key, after, text string) {
		h.c.Send(context.Background(), &bridge.Outgoing{Event: bridge.Event{
			Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "chat-api", ID: "general"},
			Sender: bridge.Sender{ID: "alice@wa", Name: "Alice"}, Text: text,
		}, Key: key, After: after})
	}
	send("k1", "", "one")
	expectEvent(t, ws, "general", 1, "one")

	big := strings.Repeat("two ", 5000) // needs pages the store cannot add
	bridgetest.CapStore(t, h.store, 1)
	send("k2", "k1", big)
	if n := h.logged("general"); n != 1 {
		t.Fatalf("%d events logged: a 20 KB append fit in a store that cannot grow, so this proves nothing", n)
	}
	bridgetest.CapStore(t, h.store, 1<<30)
	failed := h.store.FailedWrites()
	send("k3", "k2", "three")
	if n := h.logged("general"); n != 1 {
		t.Errorf("%d events logged: the event after the one that failed went first", n)
	}
	if h.store.FailedWrites() == failed {
		t.Error("the refused append is not a failed write: the core would record it as delivered")
	}

	// The core sends again from the failed event, not knowing the key
	// before it.
	send("k2", "", big)
	send("k3", "k2", "three")
	if m := readFrame(t, ws); m["seq"] != 2.0 || m["event"].(map[string]any)["id"] != "k2" {
		t.Fatalf("want k2 at seq 2, got seq %v id %v", m["seq"], m["event"].(map[string]any)["id"])
	}
	expectEvent(t, ws, "general", 3, "three")
	send("k3", "k2", "three") // a repeat: logged once
	send("k4", "k3", "four")
	expectEvent(t, ws, "general", 4, "four")
	if n := h.logged("general"); n != 4 {
		t.Errorf("%d events logged, want 4", n)
	}
}

// TestStoreThatCannotWriteIsUnavailable: the core's refusal of an event
// the store could not take reaches clients as 503 with the reason.
func TestStoreThatCannotWriteIsUnavailable(t *testing.T) {
	h := newHarness(t, nil)
	bridgetest.CapStore(t, h.store, 1)
	err := h.store.Write(context.Background(), func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO api_media (connector, sha256, mime) VALUES ('x', ?, 'text/plain')`, strings.Repeat("f", 50000))
		return err
	})
	if !errors.Is(err, bridge.ErrCannotWrite) {
		t.Fatalf("a write the store cannot take: %v, want ErrCannotWrite", err)
	}
	e := submitError(fmt.Errorf("store the event: %w", err))
	if e.status != http.StatusServiceUnavailable || e.code != codeUnavailable || !strings.Contains(e.msg, "the store cannot write") || !strings.Contains(e.msg, "free space in") {
		t.Errorf("answered %d %s %q, want 503 unavailable with the cause and the remedy", e.status, e.code, e.msg)
	}
}
