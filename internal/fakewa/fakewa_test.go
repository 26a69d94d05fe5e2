package fakewa

import (
	"testing"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

func TestPairByQRAndMessageBothWays(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	if cl.Store.ID == nil || cl.Store.ID.User != alice.PN.User {
		t.Fatalf("paired as %v", cl.Store.ID)
	}
	ctx := ctxT(t)
	if _, err := bob.SendText(ctx, alice.PN, "hello from bob"); err != nil {
		t.Fatal(err)
	}
	m := waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() != "" })
	if m.Message.GetConversation() != "hello from bob" || m.Info.Sender.User != bob.PN.User {
		t.Fatalf("got %q from %v", m.Message.GetConversation(), m.Info.Sender)
	}
	bob.SendText(ctx, alice.PN, "second one")
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "second one" })

	resp, err := cl.SendMessage(ctx, bob.PN, &waE2E.Message{Conversation: proto.String("hi bob, from the bridge")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := bob.WaitMessage(ctx, func(m Message) bool { return m.ID == resp.ID })
	if err != nil || got.Err != nil || got.Text() != "hi bob, from the bridge" {
		t.Fatalf("bob got %+v (%v)", got, err)
	}
	own, err := alice.WaitMessage(ctx, func(m Message) bool { return m.ID == resp.ID })
	if err != nil || own.Err != nil || own.Chat.User != bob.PN.User || !own.FromMe {
		t.Fatalf("alice's phone got %+v (%v)", own, err)
	}
}
