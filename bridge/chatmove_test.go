package bridge_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// TestChatsMoveToTheirNewIDs: wa's chat "lid" (mirrored on mx as a room
// of the same id) is found at start to be "pn". Everything recorded under
// "lid" follows: an event waiting for mx goes to "pn" with its chat and
// sender rewritten, a reply from either side finds a message relayed
// before the move, the mirror moves its own rows, the operator is told
// what it reported, and a chat that did not move stays as it was.
func TestChatsMoveToTheirNewIDs(t *testing.T) {
	wa, mx, ops := bridgetest.NewFake("wa", bridgetest.AllCaps), bridgetest.NewFake("mx", bridgetest.AllCaps), bridgetest.NewFake("ops", bridgetest.AllCaps)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("all", "wa/*", "mx/*")}, wa, mx, ops)
	h.Config.Notices = config.Notices{Connector: "ops", Chat: "notices"}

	at := time.Unix(1_700_000_000, 0)
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "lid"}, ID: "w1", Sender: bridge.Sender{ID: "lid", Name: "Bob"}, Time: at, Text: "first"})
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "grp"}, ID: "w2", Sender: bridge.Sender{ID: "lid", Name: "Bob"}, Time: at, Text: "in the group"})
	sent := mx.WaitSent(t, 2)
	firstOnMx := "mx-1"
	if sent[0].Text != "first" {
		t.Fatalf("mx got %q first", sent[0].Text)
	}

	// mx is down: the next message waits in the outbox under "lid".
	mx.FailWith(func(*bridge.Outgoing) error { return errors.New("homeserver down") })
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "lid"}, ID: "w3", Sender: bridge.Sender{ID: "lid", Name: "Bob"}, Time: at, Text: "waited"})
	if err := h.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	mx.FailWith(nil)
	wa.SetChatMoves([]bridge.ChatMove{{From: "lid", To: "pn"}})
	h.Start()

	if seen := wa.Seen(); !slices.Contains(seen, "lid") || !slices.Contains(seen, "grp") {
		t.Errorf("ChatMoves was told %q, want the chats and senders recorded", seen)
	}
	if got := mx.Moved("wa"); !slices.Equal(got, []bridge.ChatMove{{From: "lid", To: "pn"}}) {
		t.Errorf("the mirror moved %v for wa", got)
	}
	if got := wa.Moved("wa"); len(got) != 1 {
		t.Errorf("wa moved its own rows %v, want the one move", got)
	}
	waited := mx.WaitSent(t, 3)[2]
	if waited.Text != "waited" || waited.Chat.ID != "pn" || waited.Origin.ID != "pn" || waited.Sender.ID != "pn" {
		t.Errorf("the waiting event went to chat %q from origin %q sender %q, want all \"pn\"", waited.Chat.ID, waited.Origin.ID, waited.Sender.ID)
	}
	notice := ops.WaitSent(t, 1)
	if got := notice[len(notice)-1].Text; got != "mx moved 1 chats of wa" && got != "wa moved 1 chats of wa" {
		t.Errorf("the notice says %q", got)
	}

	// A reply from WhatsApp, now under "pn", to the message relayed under
	// "lid"; and one from the mirror's room, now "pn", to its copy.
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "pn"}, ID: "w4", Sender: bridge.Sender{ID: "pn", Name: "Bob"}, Time: at, Text: "answer", ReplyTo: "w1"})
	if got := mx.WaitSent(t, 4)[3]; got.ReplyTo != firstOnMx {
		t.Errorf("wa's answer reached mx replying to %q, want %q", got.ReplyTo, firstOnMx)
	}
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "mx", ID: "pn"}, ID: "m9", Sender: bridge.Sender{ID: "@ann", Name: "Ann"}, Time: at, Text: "from the room", ReplyTo: firstOnMx})
	if got := wa.WaitSent(t, 1)[0]; got.Chat.ID != "pn" || got.ReplyTo != "w1" {
		t.Errorf("the room's answer reached wa in %q replying to %q, want \"pn\" and w1", got.Chat.ID, got.ReplyTo)
	}
	// The group kept its id; its message's sender moved.
	h.Inject(bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{Connector: "wa", ID: "grp"}, ID: "w5", Sender: bridge.Sender{ID: "pn", Name: "Bob"}, Time: at, Text: "group answer", ReplyTo: "w2"})
	if got := mx.WaitSent(t, 5)[4]; got.Chat.ID != "grp" || got.ReplyTo != "mx-2" {
		t.Errorf("the group answer reached mx in %q replying to %q, want grp and mx-2", got.Chat.ID, got.ReplyTo)
	}
}
