package whatsapp

import (
	"slices"
	"testing"

	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
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

// TestRecordedPeopleSettle: ChatMoves, as the core calls it at start,
// settles the people recorded by LID. Bob and Eve, whose numbers are
// known and were chats, move to them; a LID whose number is unknown is
// kept for good; once settled, nothing is looked at again. Dan, met by
// LID alone, had (as if before) a chat under his number: when his number
// turns up beside his LID, the next start merges that chat into his.
func TestRecordedPeopleSettle(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{LIDAddressing: true}, nil)
	dan := lw.srv.NewPhone("15550004444", "100000000000004", "Dan")
	dan.HideNumber(true)
	ctx := ctxFor(t)
	lw.says(t, lw.bob, lw.ann.PN, "by LID, with the number beside")
	lw.says(t, lw.eve, lw.ann.PN, "so is Eve")
	unknown := "100000000000099@lid"
	seenOnce := func(ids ...string) func() ([]string, error) {
		called := false
		return func() ([]string, error) {
			if called {
				t.Fatal("seen called twice")
			}
			called = true
			return ids, nil
		}
	}
	moves, err := lw.c.ChatMoves(ctx, seenOnce(lw.bob.LID.String(), lw.bob.PN.String(), lw.eve.LID.String(), unknown, lw.family.JID.String()))
	if err != nil {
		t.Fatal(err)
	}
	want := []bridge.ChatMove{{From: lw.bob.LID.String(), To: lw.bob.PN.String()}, {From: lw.eve.LID.String(), To: lw.eve.PN.String()}}
	if !slices.Equal(moves, want) {
		t.Errorf("moves = %v, want %v", moves, want)
	}
	if got := lw.c.canonicalJID(ctx, types.NewJID("100000000000099", types.HiddenUserServer)); got.String() != unknown {
		t.Errorf("the unknown LID is now %s, want itself for good", got)
	}
	applyMoves(t, lw.c, moves)
	if moves, err := lw.c.ChatMoves(ctx, func() ([]string, error) { t.Fatal("settled, yet the core's ids were read"); return nil, nil }); err != nil || moves != nil {
		t.Errorf("settled: ChatMoves = %v, %v; want nothing", moves, err)
	}

	if ev := lw.says(t, dan, lw.ann.PN, "hidden"); ev.Chat.ID != dan.LID.String() {
		t.Fatalf("Dan with his number hidden came in %q, want his LID", ev.Chat.ID)
	}
	dan.HideNumber(false)
	dan.AddressBy(false)
	if ev := lw.says(t, dan, lw.ann.PN, "by number"); ev.Chat.ID != dan.LID.String() {
		t.Fatalf("Dan by number came in %q, want his LID", ev.Chat.ID)
	}
	moves, err = lw.c.ChatMoves(ctx, seenOnce(dan.PN.String(), dan.LID.String()))
	if want := []bridge.ChatMove{{From: dan.PN.String(), To: dan.LID.String()}}; err != nil || !slices.Equal(moves, want) {
		t.Errorf("once Dan's number turned up, moves = %v, %v; want %v", moves, err, want)
	}
}

// applyMoves makes moves in the link's tables, as the core does at start.
func applyMoves(t *testing.T, c *Connector, moves []bridge.ChatMove) {
	t.Helper()
	err := c.store.Write(ctxFor(t), func(tx *bridge.Tx) error {
		_, err := c.MoveChats(tx, c.name, moves)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
