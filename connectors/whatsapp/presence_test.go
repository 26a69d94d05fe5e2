package whatsapp

// Typing, read receipts and the link's presence on the real whatsmeow
// client and internal/fakewa, which gives a linked device typing only
// while it said it is available, as WhatsApp does.

import (
	"strings"
	"testing"

	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// newNamedWorld is a linked world whose phone has the account's name in
// its app state, as every phone has: whatsmeow announces a presence only
// with it.
func newNamedWorld(t *testing.T, opts *Options) *linkedWorld {
	t.Helper()
	return newLinkedWorldWith(t, fakewa.Options{}, opts, func(w *waWorld) {
		if err := w.ann.SetPushName(ctxFor(t), "Ann"); err != nil {
			t.Fatal(err)
		}
	})
}

// device is the link's device on the fake.
func (lw *linkedWorld) device(t testing.TB) types.JID {
	t.Helper()
	devs := lw.ann.Companions()
	if len(devs) != 1 {
		t.Fatalf("Ann's phone lists %v, want the link alone", devs)
	}
	return devs[0]
}

// presenceIs waits until the link's device said want of itself.
func (lw *linkedWorld) presenceIs(t testing.TB, dev types.JID, want string) {
	t.Helper()
	waitUntil(t, "the link to say it is "+want, func() bool { return lw.srv.PresenceOf(dev) == want })
}

func isKind(kind bridge.Kind, chat, sender string) func(bridge.Event) bool {
	return func(ev bridge.Event) bool { return ev.Kind == kind && ev.Chat.ID == chat && ev.Sender.ID == sender }
}

// TestPresenceTypingAndReads: the link says it is available after it
// connects, so a contact's typing reaches the core, in a chat and in a
// group; contacts' read receipts of what the link sent come as reads from
// them, the owner's (read on her phone) as hers; a clean stop says
// unavailable.
func TestPresenceTypingAndReads(t *testing.T) {
	t.Parallel()
	lw := newNamedWorld(t, nil)
	dev := lw.device(t)
	lw.presenceIs(t, dev, PresenceAvailable)
	bob, family := lw.bob.PN, lw.family.JID

	t.Run("typing", func(t *testing.T) {
		if n, err := lw.bob.SendChatState(lw.ann.PN, types.ChatPresenceComposing); err != nil || n != 1 {
			t.Fatalf("Bob's typing reached %d devices (%v), want the link", n, err)
		}
		ev := lw.s.waitEvent(t, "Bob typing", isKind(bridge.KindTyping, bobChat, bobChat))
		if ev.Sender.IsOwner || !ev.Chat.Direct {
			t.Errorf("Bob's typing came as %+v", ev)
		}
		if n, err := lw.eve.SendChatState(family, types.ChatPresenceComposing); err != nil || n != 1 {
			t.Fatalf("Eve's typing reached %d devices (%v), want the link", n, err)
		}
		lw.s.waitEvent(t, "Eve typing in Family", isKind(bridge.KindTyping, family.String(), lw.eve.PN.String()))
		// Bob stops: WhatsApp's "paused".
		if n, err := lw.bob.SendChatState(lw.ann.PN, types.ChatPresencePaused); err != nil || n != 1 {
			t.Fatalf("Bob's pause reached %d devices (%v), want the link", n, err)
		}
		stop := isKind(bridge.KindTyping, bobChat, bobChat)
		if ev := lw.s.waitEvent(t, "Bob stopping", func(ev bridge.Event) bool { return stop(ev) && ev.StoppedTyping }); ev.Sender.ID != bobChat {
			t.Errorf("Bob's pause came as %+v", ev)
		}
	})

	t.Run("reads", func(t *testing.T) {
		hi := fromCarol(bridge.KindMessage, bob, "pb.read.1")
		hi.Text = "read this"
		id := lw.send(t, hi)
		if _, err := lw.bob.WaitMessage(ctxFor(t), func(m fakewa.Message) bool { return m.ID == id }); err != nil {
			t.Fatal(err)
		}
		if err := lw.bob.Read(id); err != nil {
			t.Fatal(err)
		}
		ev := lw.s.waitEvent(t, "Bob's read", isKind(bridge.KindRead, bobChat, bobChat))
		if ev.Target != id || ev.Sender.IsOwner {
			t.Errorf("Bob's read came as %+v, want his read of %s", ev, id)
		}

		all := fromCarol(bridge.KindMessage, family, "pb.read.2")
		all.Text = "read this, all"
		gid := lw.send(t, all)
		if _, err := lw.eve.WaitMessage(ctxFor(t), func(m fakewa.Message) bool { return m.ID == gid }); err != nil {
			t.Fatal(err)
		}
		if err := lw.eve.Read(gid); err != nil {
			t.Fatal(err)
		}
		if ev := lw.s.waitEvent(t, "Eve's read in Family", isKind(bridge.KindRead, family.String(), lw.eve.PN.String())); ev.Target != gid || ev.Sender.IsOwner {
			t.Errorf("Eve's read came as %+v, want her read of %s", ev, gid)
		}

		// The owner reads Bob's message on her phone.
		said := lw.says(t, lw.bob, lw.ann.PN, "read me, Ann")
		if _, err := lw.ann.WaitMessage(ctxFor(t), func(m fakewa.Message) bool { return m.ID == said.ID }); err != nil {
			t.Fatal(err)
		}
		if err := lw.ann.Read(said.ID); err != nil {
			t.Fatal(err)
		}
		own := lw.s.waitEvent(t, "the owner's read", func(ev bridge.Event) bool { return ev.Kind == bridge.KindRead && ev.Sender.IsOwner })
		if own.Chat.ID != bobChat || own.Target != said.ID || own.Sender.ID != lw.ann.PN.String() {
			t.Errorf("the owner's read came as %+v", own)
		}
	})

	t.Run("a clean stop says unavailable", func(t *testing.T) {
		stopWithin(t, lw.c)
		lw.presenceIs(t, dev, PresenceUnavailable)
	})
}

// TestPresenceUnavailable: with presence: unavailable the link says so
// after it connects, and WhatsApp withholds contacts' typing; their reads
// still come.
func TestPresenceUnavailable(t *testing.T) {
	t.Parallel()
	opts := rigOptions()
	opts.Presence = PresenceUnavailable
	lw := newNamedWorld(t, opts)
	lw.presenceIs(t, lw.device(t), PresenceUnavailable)
	if n, err := lw.bob.SendChatState(lw.ann.PN, types.ChatPresenceComposing); err != nil || n != 0 {
		t.Fatalf("Bob's typing reached %d devices (%v), want none", n, err)
	}
	// What Bob sends after his typing arrives after it would have.
	lw.says(t, lw.bob, lw.ann.PN, "typed")
	for _, ev := range lw.s.eventList() {
		if ev.Kind == bridge.KindTyping {
			t.Errorf("typing reached the core while unavailable: %+v", ev)
		}
	}
	hi := fromCarol(bridge.KindMessage, lw.bob.PN, "pb.read.1")
	hi.Text = "read this"
	id := lw.send(t, hi)
	if _, err := lw.bob.WaitMessage(ctxFor(t), func(m fakewa.Message) bool { return m.ID == id }); err != nil {
		t.Fatal(err)
	}
	if err := lw.bob.Read(id); err != nil {
		t.Fatal(err)
	}
	lw.s.waitEvent(t, "Bob's read", isKind(bridge.KindRead, bobChat, bobChat))
}

// TestPresenceOption: `presence` is available unless set, and checked.
func TestPresenceOption(t *testing.T) {
	cfg, err := config.Parse([]byte("connectors:\n  phone:\n    type: whatsapp\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Connectors["phone"].Options.(*Options).Presence; got != PresenceAvailable {
		t.Errorf("presence %q by default, want available", got)
	}
	cfg, err = config.Parse([]byte("connectors:\n  phone:\n    type: whatsapp\n    presence: unavailable\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Connectors["phone"].Options.(*Options).Presence; got != PresenceUnavailable {
		t.Errorf("presence %q, want unavailable", got)
	}
	_, err = config.Parse([]byte("connectors:\n  phone:\n    type: whatsapp\n    presence: away\n"), "test.yaml")
	if err == nil || !strings.Contains(err.Error(), "connectors.phone.presence") || !strings.Contains(err.Error(), "available, unavailable") {
		t.Errorf("presence: away gave %v, want a problem at connectors.phone.presence naming the choices", err)
	}
}
