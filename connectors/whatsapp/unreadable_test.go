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
// on the phone.
func TestViewOnceIsANotice(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	id, err := lw.bob.SendViewOnce(lw.ann)
	if err != nil {
		t.Fatal(err)
	}
	ev := lw.s.waitEvent(t, "the view-once notice", func(ev bridge.Event) bool { return ev.ID == id })
	if ev.Text != viewOnceText || !ev.Notice || ev.Chat.ID != bobChat || ev.Sender.Name != "Bob" {
		t.Errorf("the view-once message was shown as %+v", ev)
	}
}

// TestCallsAreShown: a call rings only on the phone; the caller's chat
// gets a notice that one came, with who called and whether it was video,
// under the call's id (so a call offered again is relayed once). One
// that ends unanswered is then a missed call, as WhatsApp shows it; one
// answered on the phone ends with nothing more said.
func TestCallsAreShown(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	lw.says(t, lw.bob, lw.ann.PN, "calling you") // his name, from his message
	voice := lw.bob.Call(lw.ann, false)
	ev := lw.s.waitEvent(t, "the voice call", func(ev bridge.Event) bool { return ev.ID == "call."+voice })
	if ev.Chat.ID != bobChat || ev.Sender.ID != bobChat || !ev.Notice || ev.Text != "📞 Voice call from Bob: WhatsApp calls ring only on the phone." {
		t.Errorf("the call came as %+v", ev)
	}
	lw.bob.EndCall(lw.ann, voice, "timeout")
	missed := lw.s.waitEvent(t, "the missed voice call", func(ev bridge.Event) bool { return ev.ID == "call."+voice+".missed" })
	if missed.Chat.ID != bobChat || missed.Sender.ID != bobChat || !missed.Notice || missed.Text != "📞 Missed voice call from Bob" {
		t.Errorf("the missed call came as %+v", missed)
	}

	video := lw.bob.Call(lw.ann, true)
	if ev := lw.s.waitEvent(t, "the video call", func(ev bridge.Event) bool { return ev.ID == "call."+video }); !strings.Contains(ev.Text, "Video call from Bob") || !ev.Notice {
		t.Errorf("the video call came as %+v", ev)
	}
	lw.ann.AnswerCall(lw.bob, video)
	lw.bob.EndCall(lw.ann, video, "")
	// Call stanzas are handled in order: once a later call's end is
	// relayed, the answered call's end was handled before it.
	last := lw.bob.Call(lw.ann, true)
	lw.bob.EndCall(lw.ann, last, "")
	if ev := lw.s.waitEvent(t, "the last call missed", func(ev bridge.Event) bool { return ev.ID == "call."+last+".missed" }); ev.Text != "📞 Missed video call from Bob" {
		t.Errorf("the missed video call came as %+v", ev)
	}
	for _, ev := range lw.s.eventList() {
		if ev.ID == "call."+video+".missed" {
			t.Errorf("the call answered on the phone was shown as missed: %+v", ev)
		}
	}
}

// TestGroupCallsAndHiddenFailures: a group call's notice goes to the
// group's chat; a failure the sender asked to hide (a reaction, an
// edit) is not shown. Scripted: fakewa places 1:1 calls only and does
// not send decrypt-fail=hide.
func TestGroupCallsAndHiddenFailures(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)
	bob := types.NewJID("15550002222", types.DefaultUserServer)
	family := types.NewJID("120363000000000001", types.GroupServer)
	if !cl.deliver(&events.CallOfferNotice{BasicCallMeta: types.BasicCallMeta{From: bob, CallCreator: bob, CallID: "C2", GroupJID: family, Timestamp: time.Now()}, Media: "video", Type: "group"}) {
		t.Fatal("the group call was not taken")
	}
	if ev := s.waitEvent(t, "the group call", func(ev bridge.Event) bool { return ev.ID == "call.C2" }); ev.Chat.ID != family.String() || !strings.Contains(ev.Text, "Video call from") {
		t.Errorf("the group call came as %+v", ev)
	}
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
