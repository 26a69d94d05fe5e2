package whatsapp

import (
	"testing"

	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// TestPersonMetByLIDAloneStaysOne: Bob's number is hidden, so WhatsApp
// names him by LID alone, in a group and in his chat; once his number
// comes beside his LID, his messages by number and by LID are still one
// chat and one sender, a route naming his number names that chat, and a
// restart keeps it so.
func TestPersonMetByLIDAloneStaysOne(t *testing.T) {
	lw := newLinkedWorldWith(t, fakewa.Options{LIDAddressing: true}, nil, func(w *waWorld) { w.bob.HideNumber(true) })
	bobLID, bobPN := lw.bob.LID.String(), lw.bob.PN.String()
	if ev := lw.says(t, lw.bob, lw.family.JID, "hidden, in the group"); ev.Sender.ID != bobLID {
		t.Errorf("Bob's group message with his number hidden came from %q, want his LID", ev.Sender.ID)
	}
	if ev := lw.says(t, lw.bob, lw.ann.PN, "hidden, to Ann"); ev.Chat.ID != bobLID || ev.Sender.ID != bobLID {
		t.Errorf("Bob's message with his number hidden came in %q from %q, want his LID", ev.Chat.ID, ev.Sender.ID)
	}

	lw.bob.HideNumber(false)
	for _, ev := range []struct{ where, text string }{{"his chat", "now with my number"}, {"the group", "the group, with my number"}} {
		to := lw.ann.PN
		if ev.where == "the group" {
			to = lw.family.JID
		}
		got := lw.says(t, lw.bob, to, ev.text)
		if got.Sender.ID != bobLID || (to == lw.ann.PN && got.Chat.ID != bobLID) {
			t.Errorf("in %s, once his number is known, Bob's message came in %q from %q; want him as before, by LID", ev.where, got.Chat.ID, got.Sender.ID)
		}
	}
	if got, err := lw.c.ResolveChat(ctxFor(t), bobPN); err != nil || got != bobLID {
		t.Errorf("ResolveChat(Bob's number) = %q, %v; want his chat, by LID", got, err)
	}

	stopWithin(t, lw.c)
	c := lw.r.openOnFake(lw.waWorld, "me", nil)
	s := lw.r.start(c)
	s.waitRelaying(t, 0)
	if got, err := c.ResolveChat(ctxFor(t), bobPN); err != nil || got != bobLID {
		t.Errorf("after a restart ResolveChat(Bob's number) = %q, %v; want his LID", got, err)
	}
}
