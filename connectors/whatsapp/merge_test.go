package whatsapp

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// roomsMover is the fake destination as a mirror that keeps a room per
// chat and reports, as Matrix does, a person who had two.
type roomsMover struct{ *bridgetest.Fake }

func (r roomsMover) MoveChats(tx *bridge.Tx, origin string, moves []bridge.ChatMove) ([]string, error) {
	if _, err := r.Fake.MoveChats(tx, origin, moves); err != nil {
		return nil, err
	}
	var reports []string
	for _, m := range moves {
		reports = append(reports, fmt.Sprintf("one person had two rooms: %s and %s", m.From, m.To))
	}
	return reports, nil
}

// TestNumberAndLIDChatsMergeWhileRunning: Bob writes by number before
// WhatsApp paired it with his LID, then by his LID alone, and lands in a
// second chat. Messages by number then wait, the destination refusing
// that chat. When WhatsApp tells the pair (his LID with his number
// beside), his chats merge without a restart: what waited under the
// number goes to his one chat, once, in order; later messages by either
// form go there; a reply by LID to his first message by number finds it;
// the notices chat names both rooms.
func TestNumberAndLIDChatsMergeWhileRunning(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	cr := lw.underCoreAs(t, func(f *bridgetest.Fake) bridge.Connector { return roomsMover{f} })
	ctx := ctxFor(t)
	// New to the link, so it knows neither form of him yet.
	bob := lw.srv.NewPhone("15550005555", "100000000000005", "Bob Two")
	bobPN, bobLID := bob.PN.String(), bob.LID.String()

	bob.AddressBy(false)
	bob.WithoutLID(true)
	first, err := bob.SendText(ctx, lw.ann.PN, "by number")
	if err != nil {
		t.Fatal(err)
	}
	cr.await(t, "Bob's message by number", sentText(bobPN, "by number"))
	bob.AddressBy(true)
	bob.HideNumber(true)
	if _, err := bob.SendText(ctx, lw.ann.PN, "by LID alone"); err != nil {
		t.Fatal(err)
	}
	cr.await(t, "Bob's message by LID, a second chat", sentText(bobLID, "by LID alone"))

	// The number's chat cannot take deliveries: these wait under it.
	cr.dest.FailWith(func(out *bridge.Outgoing) error {
		if out.Chat.ID == bobPN {
			return errors.New("the number's room is unreachable")
		}
		return nil
	})
	bob.AddressBy(false)
	for _, text := range []string{"waits 1", "waits 2"} {
		if _, err := bob.SendText(ctx, lw.ann.PN, text); err != nil {
			t.Fatal(err)
		}
	}

	// WhatsApp tells the pair: his LID with his number beside.
	bob.AddressBy(true)
	bob.HideNumber(false)
	if _, err := bob.SendText(ctx, lw.ann.PN, "by LID, number beside"); err != nil {
		t.Fatal(err)
	}
	cr.await(t, "what waited under the number, in Bob's one chat", sentText(bobLID, "waits 2"))
	cr.await(t, "the notice naming both rooms", sentText("notices", fmt.Sprintf("one person had two rooms: %s and %s", bobPN, bobLID)))

	bob.AddressBy(false)
	bob.WithoutLID(false)
	if _, err := bob.SendText(ctx, lw.ann.PN, "by number again"); err != nil {
		t.Fatal(err)
	}
	bob.AddressBy(true)
	if _, err := bob.Send(ctx, lw.ann.PN, replyText("answering my first", first, bobPN)); err != nil {
		t.Fatal(err)
	}
	reply := cr.await(t, "Bob's answer by LID", sentText(bobLID, "answering my first"))

	sent := cr.dest.Sent()
	var inLID []string
	firstCopy := ""
	for i, out := range sent {
		if out.Text == "by number" {
			firstCopy = fmt.Sprintf("dest-%d", i+1) // the fake's ids count its sends
		}
		if out.Chat.ID == bobLID {
			inLID = append(inLID, out.Text)
		}
		if out.Chat.ID != bobLID && out.Chat.ID != "notices" && out.Text != "by number" {
			t.Errorf("%q went to %q, want Bob's one chat %s", out.Text, out.Chat.ID, bobLID)
		}
	}
	if reply.ReplyTo != firstCopy {
		t.Errorf("the answer by LID to the first message by number replies to %q, want its copy %q", reply.ReplyTo, firstCopy)
	}
	want := []string{"by LID alone", "waits 1", "waits 2", "by LID, number beside", "by number again", "answering my first"}
	for _, text := range want {
		if n := cr.count(sentText(bobLID, text)); n != 1 {
			t.Errorf("%q reached Bob's chat %d times, want once", text, n)
		}
	}
	var order []string
	for _, text := range inLID {
		if slices.Contains(want, text) {
			order = append(order, text)
		}
	}
	if i, j := slices.Index(order, "waits 1"), slices.Index(order, "waits 2"); i > j {
		t.Errorf("what waited under the number arrived as %v, out of order", order)
	}
	if got := cr.dest.MovedLive(); !slices.Equal(got, []string{"me: " + bobPN + ">" + bobLID}) {
		t.Errorf("the destination was told of moves %v, want Bob's number into his LID once", got)
	}
}
