package whatsapp

import (
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// TestUndecryptableMessageWaitsThenComes: a message the client cannot
// decrypt is shown at once as WhatsApp's "waiting for this message";
// when the sender's phone answers the retry, the message replaces it
// (an edit of the placeholder, so replies to it still find it).
func TestUndecryptableMessageWaitsThenComes(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	ctx := ctxFor(t)
	lw.says(t, lw.bob, lw.ann.PN, "a session first")
	lw.bob.Garble(1)
	id, err := lw.bob.SendText(ctx, lw.ann.PN, "the secret")
	if err != nil {
		t.Fatal(err)
	}
	placeholder := lw.s.waitEvent(t, "the placeholder", func(ev bridge.Event) bool { return ev.ID == id })
	if placeholder.Kind != bridge.KindMessage || placeholder.Text != waitingText || placeholder.Chat.ID != bobChat || placeholder.Sender.ID != bobChat || placeholder.Sender.Name != "Bob" {
		t.Errorf("the undecryptable message was shown as %+v", placeholder)
	}
	edit := lw.s.waitEvent(t, "the message itself", func(ev bridge.Event) bool { return ev.Target == id })
	if edit.Kind != bridge.KindEdit || edit.Text != "the secret" || edit.ID != id+placeholderSuffix {
		t.Errorf("the decrypted message came as %+v, want an edit of the placeholder", edit)
	}
	lw.says(t, lw.bob, lw.ann.PN, "marker")
	n := 0
	for _, ev := range lw.s.eventList() {
		if ev.Text == "the secret" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the decrypted message was relayed %d times, want once", n)
	}
}

// TestViewOnceIsANotice: WhatsApp never gives a linked device a
// view-once message, only word that one came; a notice says to open it
// on the phone. Scripted: fakewa does not send the unavailable stanza.
func TestViewOnceIsANotice(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)
	bob := types.NewJID("15550002222", types.DefaultUserServer)
	if !cl.deliver(&events.UndecryptableMessage{Info: types.MessageInfo{
		MessageSource: types.MessageSource{Chat: bob, Sender: bob}, ID: "VO1", Timestamp: time.Now(), PushName: "Bob"},
		IsUnavailable: true, UnavailableType: events.UnavailableTypeViewOnce}) {
		t.Fatal("the view-once notice was not taken")
	}
	ev := s.waitEvent(t, "the view-once notice", func(ev bridge.Event) bool { return ev.ID == "VO1" })
	if ev.Text != viewOnceText || ev.Chat.ID != bob.String() || !strings.Contains(ev.Text, "phone") {
		t.Errorf("the view-once message was shown as %+v", ev)
	}
	// A reaction or edit that failed is hidden, as its sender asked.
	if !cl.deliver(&events.UndecryptableMessage{Info: types.MessageInfo{MessageSource: types.MessageSource{Chat: bob, Sender: bob}, ID: "R1"},
		DecryptFailMode: events.DecryptFailHide}) {
		t.Fatal("a hidden failure was not taken")
	}
	for _, ev := range s.eventList() {
		if ev.ID == "R1" {
			t.Errorf("a failure to hide was shown: %+v", ev)
		}
	}
}

// TestCallsAreShown: a call rings only on the phone; its chat says one
// came, once per call, with who called and whether it was video.
// Scripted: fakewa does not place calls.
func TestCallsAreShown(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)
	bob := types.NewJID("15550002222", types.DefaultUserServer)
	family := types.NewJID("120363000000000001", types.GroupServer)
	at := time.Now().Truncate(time.Second)
	offer := &events.CallOffer{BasicCallMeta: types.BasicCallMeta{From: bob, CallCreator: bob, CallID: "C1", Timestamp: at}}
	for range 2 { // WhatsApp may offer a call again
		if !cl.deliver(offer) {
			t.Fatal("the call was not taken")
		}
	}
	if !cl.deliver(&events.CallOfferNotice{BasicCallMeta: types.BasicCallMeta{From: bob, CallCreator: bob, CallID: "C2", GroupJID: family, Timestamp: at}, Media: "video", Type: "group"}) {
		t.Fatal("the group call was not taken")
	}
	s.waitEvent(t, "the group call", func(ev bridge.Event) bool { return ev.ID == "call.C2" })
	var calls []bridge.Event
	for _, ev := range s.eventList() {
		if strings.HasPrefix(ev.ID, "call.") {
			calls = append(calls, ev)
		}
	}
	// The same call offered twice keeps its id: the core relays it once.
	if len(calls) != 3 || calls[1].ID != "call.C1" || calls[0].ID != "call.C1" || calls[0].Chat.ID != bob.String() || calls[0].Sender.ID != bob.String() || !strings.Contains(calls[0].Text, "Voice call from +15550002222") || !calls[0].Time.Equal(at) {
		t.Fatalf("the calls came as %+v", calls)
	}
	if calls[2].Chat.ID != family.String() || !strings.Contains(calls[2].Text, "Video call from") {
		t.Errorf("the group call came as %+v", calls[2])
	}
}
