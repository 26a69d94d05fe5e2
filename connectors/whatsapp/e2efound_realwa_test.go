package whatsapp

import (
	"context"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// Defects the end-to-end test through the real binary found
// (cmd/phonebridge/e2e_whatsapp_test.go), each proved here on the real
// client.

// TestLinkedAgainAfterLogoutStillKnowsEarlierMessages: after the device
// is removed on the phone and the same account linked again, a reaction
// and a reply to a message from before the logout (queued meanwhile, as
// the outbox keeps them) still reach it. Forgetting the message records at
// the logout dropped the reaction for good as "not known to link" and
// sent the reply without its quote (seen through the real binary).
func TestLinkedAgainAfterLogoutStillKnowsEarlierMessages(t *testing.T) {
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	ctx := ctxFor(t)

	before, err := w.bob.SendText(ctx, w.ann.PN, "before the logout")
	if err != nil {
		t.Fatal(err)
	}
	s.waitEvent(t, "Bob's message", textIs("before the logout"))

	if err := w.ann.RemoveCompanion(*c.dev().ID); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "logged out", func() bool { return c.LinkStatus().State == bridge.LinkLoggedOut })
	linkByQR(t, c, w.ann)
	s.waitFor(t, "connected again", func() bool { return c.LinkStatus().State == bridge.LinkConnected })

	bob := w.bob.PN.String()
	react := &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindReaction, Chat: bridge.ChatRef{ID: bob},
		Sender: bridge.Sender{ID: "owner", IsOwner: true}, Target: before, Emoji: "🙌"}, Key: "pb.r1"}
	if _, err := c.Send(context.Background(), react); err != nil {
		t.Fatalf("a reaction to a message from before the logout: %v", err)
	}
	reply := &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: bob},
		Sender: bridge.Sender{ID: "owner", IsOwner: true}, Text: "still here", ReplyTo: before}, Key: "pb.r2"}
	if _, err := c.Send(context.Background(), reply); err != nil {
		t.Fatalf("a reply to a message from before the logout: %v", err)
	}
	got, err := w.bob.WaitMessage(ctx, func(m fakewa.Message) bool { return m.Msg.GetReactionMessage() != nil })
	if err != nil {
		t.Fatal(err)
	}
	if k := got.Msg.GetReactionMessage().GetKey(); k.GetID() != before || k.GetFromMe() {
		t.Errorf("Bob's phone got the reaction on %v, want his %s", k, before)
	}
	got, err = w.bob.WaitMessage(ctx, func(m fakewa.Message) bool { return m.Text() == "still here" })
	if err != nil {
		t.Fatal(err)
	}
	if id := got.Msg.GetExtendedTextMessage().GetContextInfo().GetStanzaID(); id != before {
		t.Errorf("Bob's phone got the reply quoting %q, want his %s", id, before)
	}
}

// TestLinkShowsTheAccountsNameFromThePhone: the account's own name comes
// from the phone's app state after linking (pair-success does not carry
// it); the link's status, which `phonebridge links` shows, takes it then.
// It stayed empty until the daemon restarted (seen through the real
// binary).
func TestLinkShowsTheAccountsNameFromThePhone(t *testing.T) {
	w := newWAWorld(t, fakewa.Options{})
	if err := w.ann.SetPushName(ctxFor(t), "Ann A."); err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	c, _ := r.linkedOnFake(w, "me", nil)
	waitUntil(t, "the account's name", func() bool { return c.LinkStatus().Account.Name == "Ann A." })

	// A later change on the phone comes as its own event.
	if err := w.ann.SetPushName(ctxFor(t), "Ann B."); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the account's new name", func() bool { return c.LinkStatus().Account.Name == "Ann B." })
}
