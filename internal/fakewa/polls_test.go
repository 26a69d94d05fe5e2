package fakewa

import (
	"bytes"
	"slices"
	"testing"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// Votes go both ways between phones and a real whatsmeow client, sealed
// with the poll's secret: the client decrypts a phone's vote to the hashes
// of the options picked, in polls a phone asked and in polls the client
// asked; a phone decrypts the client's vote to the option names, in 1:1
// chats and groups, by number and by LID. A vote altered on the way, or
// for an option the poll lacks, is refused.
func TestPollVotesBothWays(t *testing.T) {
	for _, lid := range []bool{false, true} {
		t.Run(map[bool]string{false: "pn", true: "lid"}[lid], func(t *testing.T) {
			_, alice, bob, carol, g, cl := groupOfThree(t, lid)
			ctx := ctxT(t)
			poll := func(options ...string) *waE2E.Message {
				m := &waE2E.Message{PollCreationMessage: &waE2E.PollCreationMessage{Name: proto.String("Lunch?")},
					MessageContextInfo: &waE2E.MessageContextInfo{MessageSecret: randomBytes(32)}}
				for _, o := range options {
					m.PollCreationMessage.Options = append(m.PollCreationMessage.Options, &waE2E.PollCreationMessage_Option{OptionName: proto.String(o)})
				}
				return m
			}
			// clientReads waits for vote id and returns the hashes it picks.
			clientReads := func(id string) [][]byte {
				t.Helper()
				e := waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == id && e.Message.GetPollUpdateMessage() != nil })
				v, err := cl.DecryptPollVote(ctx, e)
				if err != nil {
					t.Fatalf("the client could not decrypt vote %s: %v", id, err)
				}
				return v.GetSelectedOptions()
			}
			same := func(got [][]byte, names ...string) bool {
				want := whatsmeow.HashPollOptions(names)
				return len(got) == len(want) && !slices.ContainsFunc(want, func(h []byte) bool {
					return !slices.ContainsFunc(got, func(g []byte) bool { return bytes.Equal(g, h) })
				})
			}

			// A phone's poll in a 1:1 chat, voted on by its author.
			p1, err := bob.Send(ctx, alice.PN, poll("Pizza", "Sushi", "Soup"))
			if err != nil {
				t.Fatal(err)
			}
			waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == p1 })
			v, err := bob.Vote(ctx, alice.PN, p1, "Soup", "Pizza")
			if err != nil {
				t.Fatal(err)
			}
			if got := clientReads(v); !same(got, "Pizza", "Soup") {
				t.Errorf("the client read Bob's vote as %x, want the hashes of Pizza and Soup", got)
			}
			v, _ = bob.Vote(ctx, alice.PN, p1)
			if got := clientReads(v); len(got) != 0 {
				t.Errorf("the client read Bob's withdrawal as %x", got)
			}
			if _, err := bob.Vote(ctx, alice.PN, p1, "Curry"); err == nil {
				t.Error("a phone voted for an option the poll lacks")
			}

			// A phone's poll in a group, voted on by another member.
			p2, _ := carol.Send(ctx, g.JID, poll("Mon", "Tue"))
			asked := waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == p2 && e.Message.GetPollCreationMessage() != nil })
			v, err = bob.Vote(ctx, g.JID, p2, "Tue")
			if err != nil {
				t.Fatal(err)
			}
			if got := clientReads(v); !same(got, "Tue") {
				t.Errorf("the client read Bob's group vote as %x, want the hash of Tue", got)
			}

			// The client's vote in Carol's group poll, read by the members.
			vote, err := cl.BuildPollVote(ctx, &asked.Info, []string{"Mon"})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := cl.SendMessage(ctx, g.JID, vote)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []*Phone{carol, bob, alice} {
				m, err := p.WaitMessage(ctx, func(m Message) bool { return m.ID == resp.ID })
				if err != nil || m.Err != nil {
					t.Fatalf("%s's phone did not get the client's vote: %v %v", p.PushName, err, m.Err)
				}
				if names, err := p.ReadVote(m); err != nil || !slices.Equal(names, []string{"Mon"}) {
					t.Errorf("%s's phone read the client's group vote as %q (%v), want Mon", p.PushName, names, err)
				}
			}

			// The client's own poll, voted on by the client and by Bob.
			resp, err = cl.SendMessage(ctx, bob.PN, cl.BuildPollCreation("Where?", []string{"Here", "There", "Anywhere"}, 0))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bob.WaitMessage(ctx, func(m Message) bool { return m.ID == resp.ID }); err != nil {
				t.Fatal(err)
			}
			own := types.MessageInfo{MessageSource: types.MessageSource{Chat: bob.PN, Sender: cl.Store.GetJID().ToNonAD(), IsFromMe: true}, ID: resp.ID}
			vote, err = cl.BuildPollVote(ctx, &own, []string{"There", "Anywhere"})
			if err != nil {
				t.Fatal(err)
			}
			sent, err := cl.SendMessage(ctx, bob.PN, vote)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []*Phone{bob, alice} {
				m, err := p.WaitMessage(ctx, func(m Message) bool { return m.ID == sent.ID })
				if err != nil || m.Err != nil {
					t.Fatalf("%s's phone did not get the client's vote: %v %v", p.PushName, err, m.Err)
				}
				if names, err := p.ReadVote(m); err != nil || !slices.Equal(names, []string{"There", "Anywhere"}) {
					t.Errorf("%s's phone read the client's vote as %q (%v), want There and Anywhere", p.PushName, names, err)
				}
				// Altered on the way, it opens for no one.
				bad := m
				bad.Msg = proto.Clone(m.Msg).(*waE2E.Message)
				bad.Msg.PollUpdateMessage.Vote.EncPayload[0] ^= 1
				if names, err := p.ReadVote(bad); err == nil {
					t.Errorf("%s's phone read an altered vote as %q", p.PushName, names)
				}
			}
			v, err = bob.Vote(ctx, alice.PN, resp.ID, "Here")
			if err != nil {
				t.Fatal(err)
			}
			if got := clientReads(v); !same(got, "Here") {
				t.Errorf("the client read Bob's vote in its own poll as %x, want the hash of Here", got)
			}
		})
	}
}
