package whatsapp

// Poll votes on the wire: phones on internal/fakewa vote as WhatsApp's
// apps do (sealed with the poll's secret, options named by hash), the
// real whatsmeow client decrypts them for the connector, and the votes
// the connector sends are decrypted by the phones.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// TestVotes: votes in WhatsApp polls reach the core as votes, with the
// option indexes of the poll as relayed and the voter as other messages
// name them (the owner's, from the phone, as the owner's); the owner's
// votes made elsewhere become the account's own WhatsApp votes, and
// others' go as words answering the poll. Polls from phones and polls
// the connector asked both work, and a poll's options are hashed as
// WhatsApp has them (one here ends in a space).
func TestVotes(t *testing.T) {
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s, log := r.linkedOnFakeLogged(w, nil)
	c.desc.http = w.srv.HTTPClient()
	lw := &linkedWorld{waWorld: w, r: r, c: c, s: s}
	family := lw.family.JID

	pollMsg := func(question string, options ...string) *waE2E.Message {
		m := &waE2E.Message{PollCreationMessage: &waE2E.PollCreationMessage{Name: proto.String(question)},
			MessageContextInfo: &waE2E.MessageContextInfo{MessageSecret: bytes.Repeat([]byte{byte(len(question))}, 32)}}
		for _, o := range options {
			m.PollCreationMessage.Options = append(m.PollCreationMessage.Options, &waE2E.PollCreationMessage_Option{OptionName: proto.String(o)})
		}
		return m
	}
	// vote has p vote in poll and returns the vote as relayed.
	vote := func(t *testing.T, p *fakewa.Phone, chat types.JID, poll string, options ...string) bridge.Event {
		t.Helper()
		id, err := p.Vote(ctxFor(t), chat, poll, options...)
		if err != nil {
			t.Fatalf("%s's phone could not vote: %v", p.PushName, err)
		}
		return lw.s.waitEvent(t, "the vote of "+p.PushName, func(ev bridge.Event) bool { return ev.ID == id })
	}
	checkVote := func(t *testing.T, ev bridge.Event, chat types.JID, poll string, sender *fakewa.Phone, owner bool, choices ...int) {
		t.Helper()
		if ev.Kind != bridge.KindVote || ev.Target != poll || ev.Chat.ID != chat.String() || ev.Vote == nil || !slices.Equal(ev.Vote.Choices, choices) ||
			ev.Sender.ID != sender.PN.String() || (!owner && ev.Sender.Name != sender.PushName) || ev.Sender.IsOwner != owner {
			t.Errorf("%s's vote relayed as %s on %q in %s by %+v: %+v; want choices %v in poll %s, owner %v", sender.PushName, ev.Kind, ev.Target, ev.Chat.ID, ev.Sender, ev.Vote, choices, poll, owner)
		}
		if err := ev.Check(); err != nil {
			t.Errorf("the core would refuse the vote: %v", err)
		}
	}

	// Bob's poll in Family.
	asked := lw.fromPhone(t, lw.bob, family, pollMsg("Lunch?", "Pizza", "Sushi", "Soup "))
	if asked.Poll == nil || !slices.Equal(asked.Poll.Options, []string{"Pizza", "Sushi", "Soup"}) {
		t.Fatalf("the poll relayed as %+v", asked.Poll)
	}
	lunch := asked.ID

	t.Run("votes from phones", func(t *testing.T) {
		checkVote(t, vote(t, lw.eve, family, lunch, "Pizza"), family, lunch, lw.eve, false, 0)
		checkVote(t, vote(t, lw.bob, family, lunch, "Soup ", "Pizza"), family, lunch, lw.bob, false, 0, 2)
		checkVote(t, vote(t, lw.eve, family, lunch, "Sushi"), family, lunch, lw.eve, false, 1) // Eve changes her mind
		checkVote(t, vote(t, lw.bob, family, lunch), family, lunch, lw.bob, false)             // Bob withdraws
		// The owner voting on the phone itself.
		checkVote(t, vote(t, lw.ann, family, lunch, "Soup "), family, lunch, lw.ann, true, 2)

		// In the order they were made.
		var order []string
		for _, ev := range lw.s.eventList() {
			if ev.Kind == bridge.KindVote && ev.Target == lunch {
				who := ev.Sender.Name
				if ev.Sender.IsOwner {
					who = "me" // named as the owner's other messages are
				}
				order = append(order, fmt.Sprint(who, ev.Vote.Choices))
			}
		}
		if want := []string{"Eve[0]", "Bob[0 2]", "Eve[1]", "Bob[]", "me[2]"}; !slices.Equal(order, want) {
			t.Errorf("the votes were relayed as %q, want %q", order, want)
		}

		// In a 1:1 chat too, on a poll from the other person.
		ev := lw.fromPhone(t, lw.bob, lw.ann.PN, pollMsg("Tea?", "Yes", "No"))
		checkVote(t, vote(t, lw.bob, lw.ann.PN, ev.ID, "No"), lw.bob.PN, ev.ID, lw.bob, false, 1)
	})

	t.Run("votes that cannot be shown are dropped", func(t *testing.T) {
		ctx := ctxFor(t)
		forged := func(poll string) *waE2E.Message {
			return &waE2E.Message{PollUpdateMessage: &waE2E.PollUpdateMessage{
				PollCreationMessageKey: &waCommon.MessageKey{ID: proto.String(poll), RemoteJID: proto.String(family.String()), Participant: proto.String(lw.bob.PN.String())},
				Vote:                   &waE2E.PollEncValue{EncPayload: bytes.Repeat([]byte{1}, 48), EncIV: bytes.Repeat([]byte{2}, 12)},
			}}
		}
		garbled, err := lw.eve.Send(ctx, family, forged(lunch))
		if err != nil {
			t.Fatal(err)
		}
		unknown, err := lw.eve.Send(ctx, family, forged("3A00000000000000NOPE"))
		if err != nil {
			t.Fatal(err)
		}
		lw.says(t, lw.eve, family, "after the bad votes")
		for _, ev := range lw.s.eventList() {
			if ev.ID == garbled || ev.ID == unknown {
				t.Errorf("a vote that cannot be shown was relayed: %+v", ev)
			}
		}
		if n := len(log.lines("could not be decrypted")); n != 1 {
			t.Errorf("%d log lines about the vote that did not decrypt, want 1", n)
		}
		if n := len(log.lines("poll the link does not know")); n != 1 {
			t.Errorf("%d log lines about the vote in an unknown poll, want 1", n)
		}
	})

	t.Run("the owner's vote is the account's", func(t *testing.T) {
		out := fromCarol(bridge.KindVote, family, "pb.vote.owner")
		out.Sender = bridge.Sender{ID: "@ann:matrix", Name: "Ann", IsOwner: true}
		out.Target = lunch
		out.Vote = &bridge.Vote{Choices: []int{1, 2}, Question: "Lunch?", Options: []string{"Pizza", "Sushi", "Soup"}, Tally: []int{0, 2, 2}}
		id := lw.send(t, out)
		for _, p := range []*fakewa.Phone{lw.eve, lw.bob} {
			m := lw.got(t, p, family, "pb.vote.owner", 1)[0]
			if m.Msg.GetPollUpdateMessage() == nil || m.ID != id {
				t.Fatalf("%s's phone got %v (id %s), want a vote (id %s)", p.PushName, m.Msg, m.ID, id)
			}
			// Decrypted by the phone, with the options as it has them.
			if names, err := p.ReadVote(m); err != nil || !slices.Equal(names, []string{"Sushi", "Soup "}) {
				t.Errorf("%s's phone read the owner's vote as %q (%v), want Sushi and Soup", p.PushName, names, err)
			}
		}
		// Withdrawn.
		out = fromCarol(bridge.KindVote, family, "pb.vote.owner.none")
		out.Sender, out.Target, out.Vote = bridge.Sender{Name: "Ann", IsOwner: true}, lunch, &bridge.Vote{}
		lw.send(t, out)
		m := lw.got(t, lw.bob, family, "pb.vote.owner.none", 1)[0]
		if names, err := lw.bob.ReadVote(m); err != nil || len(names) != 0 {
			t.Errorf("Bob's phone read the owner's withdrawal as %q (%v)", names, err)
		}
		// An option the poll does not have is refused for good.
		out = fromCarol(bridge.KindVote, family, "pb.vote.owner.bad")
		out.Sender, out.Target, out.Vote = bridge.Sender{Name: "Ann", IsOwner: true}, lunch, &bridge.Vote{Choices: []int{5}}
		if _, err := lw.c.Send(ctxFor(t), out); !bridge.IsPermanent(err) {
			t.Errorf("a vote for option 6 of 3: %v, want a permanent failure", err)
		}
	})

	t.Run("someone else's vote goes as words", func(t *testing.T) {
		out := fromCarol(bridge.KindVote, family, "pb.vote.carol")
		out.Target = lunch
		out.Vote = &bridge.Vote{Choices: []int{0}, Question: "Lunch?", Options: []string{"Pizza", "Sushi", "Soup"}, Tally: []int{1, 1, 2}}
		id := lw.send(t, out)
		m := lw.got(t, lw.eve, family, "pb.vote.carol", 1)[0]
		want := "Carol voted for “Pizza” in “Lunch?” (Pizza 1 · Sushi 1 · Soup 2)"
		if m.Text() != want || m.Msg.GetExtendedTextMessage().GetContextInfo().GetStanzaID() != lunch || m.Msg.GetPollUpdateMessage() != nil || m.ID != id {
			t.Errorf("Eve's phone got %q answering %q (id %s), want %q answering the poll %s (id %s)", m.Text(), m.Msg.GetExtendedTextMessage().GetContextInfo().GetStanzaID(), m.ID, want, lunch, id)
		}
	})

	t.Run("a poll the connector asked", func(t *testing.T) {
		out := fromCarol(bridge.KindMessage, family, "pb.poll.asked")
		out.Poll = &bridge.Poll{Question: "Film?", Options: []string{"Alien", "Heat", "Up"}}
		poll := lw.send(t, out)
		lw.got(t, lw.bob, family, "pb.poll.asked", 1)
		// A phone's vote, read with the secret of the link's own message.
		checkVote(t, vote(t, lw.bob, family, poll, "Up", "Heat"), family, poll, lw.bob, false, 1, 2)
		// The owner on the phone.
		checkVote(t, vote(t, lw.ann, family, poll, "Alien"), family, poll, lw.ann, true, 0)
		// The owner elsewhere: the account votes in its own poll.
		vo := fromCarol(bridge.KindVote, family, "pb.poll.asked.vote")
		vo.Sender, vo.Target, vo.Vote = bridge.Sender{Name: "Ann", IsOwner: true}, poll, &bridge.Vote{Choices: []int{0}}
		lw.send(t, vo)
		m := lw.got(t, lw.eve, family, "pb.poll.asked.vote", 1)[0]
		if names, err := lw.eve.ReadVote(m); err != nil || !slices.Equal(names, []string{"Alien"}) {
			t.Errorf("Eve's phone read the owner's vote in the link's poll as %q (%v), want Alien", names, err)
		}
	})

	t.Run("a vote the core could not store comes again", func(t *testing.T) {
		dev := *lw.c.dev().ID
		lw.s.update(func() { lw.s.refuse = errors.New("store the event: disk I/O error") })
		id, err := lw.eve.Vote(ctxFor(t), family, lunch, "Soup ")
		if err != nil {
			t.Fatal(err)
		}
		lw.s.waitFor(t, "the vote to be refused", func() bool {
			return slices.ContainsFunc(lw.s.refused, func(ev bridge.Event) bool { return ev.ID == id })
		})
		lw.s.update(func() { lw.s.refuse = nil })
		if !slices.Contains(lw.srv.PendingIDs(dev), id) {
			t.Fatalf("the refused vote was acknowledged to WhatsApp")
		}
		lw.srv.Kick(lw.ann) // the connection drops; whatsmeow reconnects
		ev := lw.s.waitEvent(t, "the vote again", func(ev bridge.Event) bool { return ev.ID == id })
		checkVote(t, ev, family, lunch, lw.eve, false, 2)
		waitUntil(t, "the offline queue to empty", func() bool { return !slices.Contains(lw.srv.PendingIDs(dev), id) })
	})
}

// TestVotesByLID: where WhatsApp names people by LID (LID groups, chats
// addressed by LID), votes are still read and made: the poll's secret is
// found whichever form named its author, and voters are the people other
// messages name (by number, where WhatsApp tells it).
func TestVotesByLID(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{LIDAddressing: true}, nil)
	family := lw.family.JID
	poll := &waE2E.Message{PollCreationMessage: &waE2E.PollCreationMessage{Name: proto.String("Lunch?"), Options: []*waE2E.PollCreationMessage_Option{
		{OptionName: proto.String("Pizza")}, {OptionName: proto.String("Sushi")},
	}}, MessageContextInfo: &waE2E.MessageContextInfo{MessageSecret: bytes.Repeat([]byte{9}, 32)}}
	vote := func(t *testing.T, p *fakewa.Phone, chat types.JID, poll string, options ...string) bridge.Event {
		t.Helper()
		id, err := p.Vote(ctxFor(t), chat, poll, options...)
		if err != nil {
			t.Fatalf("%s's phone could not vote: %v", p.PushName, err)
		}
		return lw.s.waitEvent(t, "the vote of "+p.PushName, func(ev bridge.Event) bool { return ev.ID == id })
	}

	for _, chat := range []types.JID{family, lw.ann.PN} {
		asked := lw.fromPhone(t, lw.bob, chat, poll)
		ev := vote(t, lw.bob, chat, asked.ID, "Sushi")
		if ev.Kind != bridge.KindVote || ev.Target != asked.ID || ev.Chat.ID != asked.Chat.ID || ev.Sender.ID != lw.bob.PN.String() || ev.Vote == nil || !slices.Equal(ev.Vote.Choices, []int{1}) {
			t.Errorf("Bob's vote in %s relayed as %+v (vote %+v), want Sushi in poll %s by %s", chat, ev, ev.Vote, asked.ID, lw.bob.PN)
		}
		own := chat // the chat as the owner's phone has it
		if chat != family {
			own = lw.bob.PN
		}
		ev = vote(t, lw.ann, own, asked.ID, "Pizza")
		if ev.Kind != bridge.KindVote || !ev.Sender.IsOwner || ev.Vote == nil || !slices.Equal(ev.Vote.Choices, []int{0}) {
			t.Errorf("the owner's vote in %s relayed as %+v (vote %+v), want Pizza by the owner", chat, ev, ev.Vote)
		}
	}

	asked := lw.fromPhone(t, lw.bob, family, poll)
	out := fromCarol(bridge.KindVote, family, "pb.lid.vote")
	out.Sender, out.Target, out.Vote = bridge.Sender{Name: "Ann", IsOwner: true}, asked.ID, &bridge.Vote{Choices: []int{1}}
	lw.send(t, out)
	m := lw.got(t, lw.eve, family, "pb.lid.vote", 1)[0]
	if names, err := lw.eve.ReadVote(m); err != nil || !slices.Equal(names, []string{"Sushi"}) {
		t.Errorf("Eve's phone read the owner's vote in a LID group as %q (%v), want Sushi", names, err)
	}

	o := fromCarol(bridge.KindMessage, family, "pb.lid.poll")
	o.Poll = &bridge.Poll{Question: "Film?", Options: []string{"Alien", "Heat"}}
	id := lw.send(t, o)
	lw.got(t, lw.eve, family, "pb.lid.poll", 1)
	if ev := vote(t, lw.eve, family, id, "Heat"); ev.Kind != bridge.KindVote || ev.Sender.ID != lw.eve.PN.String() || ev.Vote == nil || !slices.Equal(ev.Vote.Choices, []int{1}) {
		t.Errorf("Eve's vote in the link's poll in a LID group relayed as %+v (vote %+v)", ev, ev.Vote)
	}
}

// TestPollOptionsGoWithTheirMessage: a poll's option names are kept with
// its message's record (another record of the same message, an edit's,
// leaves them), forgotten when it disappears, and pruned with it.
func TestPollOptionsGoWithTheirMessage(t *testing.T) {
	r := newRig(t)
	c := r.open("me", nil)
	ctx := ctxFor(t)
	bob := types.NewJID("15550002222", types.DefaultUserServer)
	now := time.Now()
	c.rememberNow(ctx, msgRef{Chat: bob, ID: "P1", Sender: bob, Text: "📊 Lunch?", Options: []string{"Pizza", "Soup "}})
	c.rememberNow(ctx, msgRef{Chat: bob, ID: "P1", Sender: bob, Text: "📊 Lunch today?"})
	c.rememberNow(ctx, msgRef{Chat: bob, ID: "P2", Sender: bob, Text: "📊 Gone?", Options: []string{"Yes", "No"}, Expires: now.Add(-time.Second)})
	if ref, err := c.lookup(ctx, bob, "P1"); err != nil || ref == nil || !slices.Equal(ref.Options, []string{"Pizza", "Soup "}) {
		t.Fatalf("the poll is known as %+v (%v), want its options as WhatsApp has them", ref, err)
	}
	c.forgetExpired(ctx, now)
	if ref, err := c.lookup(ctx, bob, "P2"); err != nil || ref == nil || ref.Options != nil || ref.Text != "" {
		t.Errorf("a poll that disappeared is known as %+v (%v), want neither text nor options", ref, err)
	}
	if _, err := c.Prune(ctx, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ref, err := c.lookup(ctx, bob, "P1"); err != nil || ref != nil {
		t.Errorf("a pruned poll is still known: %+v (%v)", ref, err)
	}
}
