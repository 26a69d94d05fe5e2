package whatsapp

// The link under the real core: what depends on the core's message map
// (an id relayed once, moves of chats recorded under old ids) is tested
// with the bridge itself relaying to a fake destination.

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// coreRun is the link "me" started by the core, its chats routed
// (chats: all) to dest, a fake that shows history; notices go to dest's
// chat "notices".
type coreRun struct {
	b    *bridge.Bridge
	c    *Connector
	dest *bridgetest.Fake
}

// underCore stops lw's connector, which a recording sink ran, and starts
// the link again under the core on the same store.
func (lw *linkedWorld) underCore(t *testing.T) *coreRun {
	t.Helper()
	return lw.underCoreAs(t, nil)
}

// underCoreAs is underCore with dest wrapped by wrap (nil: as it is), for
// a destination that does more than the fake.
func (lw *linkedWorld) underCoreAs(t *testing.T, wrap func(*bridgetest.Fake) bridge.Connector) *coreRun {
	t.Helper()
	stopWithin(t, lw.c)
	c := lw.r.openOnFake(lw.waWorld, "me", nil)
	c.desc.http = lw.srv.HTTPClient()
	caps := bridgetest.AllCaps
	caps.History = true
	dest := bridgetest.NewFake("dest", caps)
	cfg := config.Defaults()
	cfg.Routes = []config.Route{bridgetest.Route("all", "me/*", "dest/*")}
	cfg.Notices.Connector, cfg.Notices.Chat = "dest", "notices"
	cfg.Delivery.RetryMin = 10 * time.Millisecond
	cfg.Delivery.RetryMax = 100 * time.Millisecond
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("PHONEBRIDGE_TEST_LOG") != "" {
		log = testLogger(t)
	}
	var d bridge.Connector = dest
	if wrap != nil {
		d = wrap(dest)
	}
	b := bridge.New(lw.r.store, map[string]bridge.Connector{"me": c, "dest": d}, &cfg, log)
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("start the bridge: %v", err)
	}
	t.Cleanup(func() {
		lw.srv.Quiesce(2 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("stop the bridge: %v", err)
		}
		if r := dest.Repeats(); len(r) > 0 {
			t.Errorf("dest was sent deliveries more than once: %v", r)
		}
	})
	waitUntil(t, "the link to be connected", func() bool { return c.LinkStatus().State == bridge.LinkConnected })
	return &coreRun{b: b, c: c, dest: dest}
}

// await waits until dest was sent an event that ok accepts, and returns it.
func (cr *coreRun) await(t testing.TB, what string, ok func(bridge.Outgoing) bool) bridge.Outgoing {
	t.Helper()
	var found bridge.Outgoing
	waitUntil(t, what, func() bool {
		for _, out := range cr.dest.Sent() {
			if ok(out) {
				found = out
				return true
			}
		}
		return false
	})
	return found
}

// count is how many events dest was sent that ok accepts.
func (cr *coreRun) count(ok func(bridge.Outgoing) bool) int {
	n := 0
	for _, out := range cr.dest.Sent() {
		if ok(out) {
			n++
		}
	}
	return n
}

func sentText(chat, text string) func(bridge.Outgoing) bool {
	return func(out bridge.Outgoing) bool { return out.Chat.ID == chat && out.Text == text }
}

// replyText is a message quoting id, which participant wrote.
func replyText(text, id, participant string) *waE2E.Message {
	return &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text:        proto.String(text),
		ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String(id), Participant: proto.String(participant), QuotedMessage: &waE2E.Message{Conversation: proto.String("quoted")}},
	}}
}

// eventJSON is ev as the core queues it.
func eventJSON(t testing.TB, ev bridge.Event) []byte {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLiveThenHistoryRelayedOnce: a message that came live comes again in
// a history sync chunk (WhatsApp puts recent messages in it): the
// destination gets it once, and the chunk's other message, which did not
// come live, as history.
func TestLiveThenHistoryRelayedOnce(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	cr := lw.underCore(t)
	ctx := ctxFor(t)
	bob := lw.bob.PN.String()
	id, err := lw.bob.SendText(ctx, lw.ann.PN, "live first")
	if err != nil {
		t.Fatal(err)
	}
	live := cr.await(t, "the live message", sentText(bob, "live first"))
	if live.History {
		t.Errorf("the live message went as history: %+v", live)
	}

	now := time.Now().Truncate(time.Second)
	chunk := lw.ann.NewHistorySync(waHistorySync.HistorySync_RECENT, lw.ann.HistoryConversation(lw.bob.PN, "",
		fakewa.HistoryMessage{Text: "only in history", Time: now.Add(-time.Hour)},
		fakewa.HistoryMessage{ID: id, Text: "live first", Time: now},
	))
	if err := lw.ann.SendHistorySync(ctx, chunk); err != nil {
		t.Fatal(err)
	}
	cr.await(t, "the history message", func(out bridge.Outgoing) bool { return out.Text == "only in history" && out.History })
	// A live message waits for its chat's stored history: once it is
	// through, the chunk's copy of the live message was handled.
	if _, err := lw.bob.SendText(ctx, lw.ann.PN, "after the chunk"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the history to be relayed", func() bool { return cr.c.backfillPending(ctx) == 0 })
	cr.await(t, "the message after the chunk", sentText(bob, "after the chunk"))
	if n := cr.count(sentText(bob, "live first")); n != 1 {
		t.Errorf("the message that came live and in history was relayed %d times, want once", n)
	}
}
