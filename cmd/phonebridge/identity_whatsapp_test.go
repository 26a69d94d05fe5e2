package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"
	"maunium.net/go/mautrix/event"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// TestWhatsAppOnePersonOneChat: WhatsApp addresses Bob by LID, then by
// phone number, then by LID again, in his chat and in a LID group. He is
// one chat, one portal and one ghost throughout: every message reaches
// his portal in order from the same ghost, the IRC channel whose route
// names him by number gets them all, the API gets them under his
// number, and replies across the forms find their targets both ways.
func TestWhatsAppOnePersonOneChat(t *testing.T) {
	w := newE2EWorld(t)
	club := w.srv.NewGroup("120363000000000003", "Club", w.ann, w.bob, w.eve) // a LID group
	w.start(t)
	w.link(t)
	w.waitFor(t, "the link to be connected", func() bool { return strings.Contains(w.links(t), "connected") })
	clubRoom := w.owner.AcceptInvite(t, "Club", e2eWait)
	bobChat, bobGhost := w.bob.PN.String(), ghost(w.bob.PN)

	forms := []bool{true, false, true} // by LID, by number, by LID
	ids := make([]string, len(forms))
	for i, byLID := range forms {
		w.bob.AddressBy(byLID)
		ids[i] = phoneSend(t, w.bob, w.ann.PN, text(fmt.Sprintf("form %d", i)))
	}
	bobRoom := w.owner.AcceptInvite(t, "Bob", e2eWait)
	var events []*event.Event
	for i := range forms {
		events = append(events, w.owner.Await(t, fmt.Sprintf("form %d in Bob's portal", i), e2eWait, matrixMsg(bobRoom, bobGhost, fmt.Sprintf("form %d", i))))
	}
	for i := 1; i < len(events); i++ {
		if events[i].Timestamp < events[i-1].Timestamp {
			t.Errorf("form %d reached the portal before form %d", i, i-1)
		}
	}
	phoneSend(t, w.bob, club.JID, text("in the club"))
	if evt := w.owner.Await(t, "Bob in the club", e2eWait, matrixMsg(clubRoom, bobGhost, "in the club")); evt.Sender != bobGhost {
		t.Errorf("Bob's club message came from %s, want his one ghost %s", evt.Sender, bobGhost)
	}
	if n := w.owner.Invited("Bob"); n != 1 {
		t.Errorf("the owner was invited to %d rooms called Bob, want his one portal", n)
	}
	for i := range forms {
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", fmt.Sprintf("form %d", i)), w.d)
		w.api.await(t, fmt.Sprintf("form %d", i), bobChat, func(ev *daemontest.WireEvent) bool { return ev.Text == fmt.Sprintf("form %d", i) })
	}

	// The owner answers the message that came by number; Bob, by LID,
	// answers the owner.
	reply := &event.MessageEventContent{MsgType: event.MsgText, Body: "answering form 1", RelatesTo: (&event.RelatesTo{}).SetReplyTo(events[1].ID)}
	replyEvent := w.ownerSays(t, bobRoom, reply)
	got := w.phoneGets(t, w.bob, "the owner's answer", func(m fakewa.Message) bool { return w.fromBridge(m, w.ann.PN) && m.Text() == "answering form 1" })
	if ci := got.Msg.GetExtendedTextMessage().GetContextInfo(); ci.GetStanzaID() != ids[1] {
		t.Errorf("Bob's phone got the owner's answer quoting %q, want his %s", ci.GetStanzaID(), ids[1])
	}
	w.bob.AddressBy(true)
	phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
		Text:        proto.String("answering the owner"),
		ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String(got.ID), Participant: proto.String(w.ann.PN.String()), QuotedMessage: text("answering form 1")},
	}})
	back := w.owner.Await(t, "Bob's answer", e2eWait, matrixMsg(bobRoom, bobGhost, "answering the owner"))
	if rel := back.Content.AsMessage().RelatesTo; rel == nil || rel.GetReplyTo() != replyEvent {
		t.Errorf("Bob's answer by LID relates in Matrix to %+v, want a reply to the owner's %s", rel, replyEvent)
	}
	w.srv.Quiesce(2 * time.Second)
	w.d.Stop(5 * time.Second)
}
