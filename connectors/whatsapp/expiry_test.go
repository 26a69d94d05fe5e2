package whatsapp

import (
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// TestDisappearingChats on the real client: a message from a chat with a
// timer carries it; what the link sends into that chat afterwards carries
// the timer too (WhatsApp's apps would otherwise keep it for good), until
// the phone turns the timer off; and what the link keeps of a message
// (its text, for quotes) is forgotten when the message disappears.
func TestDisappearingChats(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	bob := lw.bob.PN
	const week = 7 * 24 * 3600

	ev := lw.fromPhone(t, lw.bob, lw.ann.PN, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text: proto.String("this goes in a week"), ContextInfo: &waE2E.ContextInfo{Expiration: proto.Uint32(week)},
	}})
	if ev.ExpiresInSec != week {
		t.Errorf("a message of a disappearing chat relayed with expiry %d s, want %d", ev.ExpiresInSec, week)
	}

	sendText := func(key, text string) *waE2E.Message {
		t.Helper()
		out := fromCarol(bridge.KindMessage, bob, key)
		out.Text = text
		lw.send(t, out)
		return lw.got(t, lw.bob, bob, key, 1)[0].Msg
	}
	m := sendText("pb.eph.1", "relayed into it")
	if ext := m.GetExtendedTextMessage(); ext.GetText() != "*Carol*: relayed into it" || ext.GetContextInfo().GetExpiration() != week {
		t.Errorf("a message relayed into the disappearing chat went as %v, want the text with the week's timer", m)
	}
	out := fromCarol(bridge.KindMessage, bob, "pb.eph.2")
	out.Location = &bridge.Location{Latitude: 1, Longitude: 2}
	lw.send(t, out)
	if l := lw.got(t, lw.bob, bob, "pb.eph.2", 1)[0].Msg.GetLocationMessage(); l.GetContextInfo().GetExpiration() != week {
		t.Errorf("a place relayed into the disappearing chat went as %v, want the week's timer", l)
	}

	// The phone turns the timer off: what follows stays.
	lw.fromPhone(t, lw.bob, lw.ann.PN, &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
		Type: waE2E.ProtocolMessage_EPHEMERAL_SETTING.Enum(), EphemeralExpiration: proto.Uint32(0),
	}})
	if m := sendText("pb.eph.3", "after the timer"); m.GetConversation() != "*Carol*: after the timer" {
		t.Errorf("after the timer was turned off a message went as %v, want a plain text", m)
	}

	// A message that disappears in a second: its text goes with it.
	short := lw.fromPhone(t, lw.bob, lw.ann.PN, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text: proto.String("gone soon"), ContextInfo: &waE2E.ContextInfo{Expiration: proto.Uint32(1)},
	}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ref, err := lw.c.lookup(ctxFor(t), bob, short.ID)
		if err != nil || ref == nil {
			t.Fatalf("the message is not known: %v, %v", ref, err)
		}
		if ref.Text == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after it disappeared the link still keeps its text %q", ref.Text)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ref, _ := lw.c.lookup(ctxFor(t), bob, ev.ID); ref == nil || ref.Text != "this goes in a week" {
		t.Errorf("a message due in a week lost its text early: %+v", ref)
	}
}
