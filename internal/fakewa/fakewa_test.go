package fakewa

import (
	"fmt"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow"
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

func TestPairByCode(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := newClient(t, srv, nil, nil)
	ctx := ctxT(t)
	qr, _ := cl.GetQRChannel(ctx)
	if err := cl.Connect(); err != nil {
		t.Fatal(err)
	}
	<-qr // a code can be asked for once the first QR is shown
	code, err := cl.PairPhone(ctx, "+1 555 000 1111", true, whatsmeow.PairClientChrome, "Chrome (Linux)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.EnterPairingCode(ctx, code); err != ErrCodeExpired {
		t.Fatalf("another phone typing the code: %v", err)
	}
	if _, err := alice.EnterPairingCode(ctx, code); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.PairSuccess](t, cl, nil)
	waitEvent[*events.Connected](t, cl, nil)
	bob.SendText(ctx, alice.PN, "after code pairing")
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "after code pairing" })
}

func TestPairByWrongCodeFails(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := newClient(t, srv, nil, nil)
	ctx := ctxT(t)
	qr, _ := cl.GetQRChannel(ctx)
	cl.Connect()
	<-qr
	code, err := cl.PairPhone(ctx, "+15550001111", true, whatsmeow.PairClientChrome, "Chrome (Linux)")
	if err != nil {
		t.Fatal(err)
	}
	wrong := []byte(code)
	wrong[0] ^= 1
	if _, err := alice.EnterPairingCode(ctx, string(wrong)); err == nil {
		t.Fatal("a wrong code paired")
	}
	if cl.Store.ID != nil {
		t.Fatalf("client paired as %v with a wrong code", cl.Store.ID)
	}
}

// groupOfThree is a server, addressing by LID or by number, where Alice,
// Bob and Carol are in a group, and a client linked as Alice.
func groupOfThree(t *testing.T, lid bool) (srv *Server, alice, bob, carol *Phone, g *Group, cl *client) {
	t.Helper()
	srv = newServer(t, Options{LIDAddressing: lid})
	alice = srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob = srv.NewPhone("15550002222", "100000000000002", "Bob")
	carol = srv.NewPhone("15550003333", "100000000000003", "Carol")
	g = srv.NewGroup("120363000000000001", "Test group", alice, bob, carol)
	return srv, alice, bob, carol, g, link(t, srv, alice)
}

func TestGroupMessagesBothWays(t *testing.T) {
	for _, lid := range []bool{false, true} {
		t.Run(map[bool]string{false: "pn", true: "lid"}[lid], func(t *testing.T) {
			srv, alice, bob, carol, g, cl := groupOfThree(t, lid)
			ctx := ctxT(t)
			info, err := cl.GetGroupInfo(ctx, g.JID)
			if err != nil || info.Name != "Test group" || len(info.Participants) != 3 {
				t.Fatalf("group info %+v, %v", info, err)
			}
			joined, err := cl.GetJoinedGroups(ctx)
			if err != nil || len(joined) != 1 {
				t.Fatalf("joined %v, %v", joined, err)
			}
			for i := range 3 {
				bob.SendText(ctx, g.JID, fmt.Sprintf("hello group %d", i))
			}
			carol.SendText(ctx, g.JID, "carol too")
			for i := range 3 {
				m := waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == fmt.Sprintf("hello group %d", i) })
				if m.Info.Chat != g.JID || m.Info.Sender.User != srv.addressOf(g, bob).User {
					t.Fatalf("group message in %v from %v", m.Info.Chat, m.Info.Sender)
				}
			}
			waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "carol too" })
			for i := range 2 {
				resp, err := cl.SendMessage(ctx, g.JID, &waE2E.Message{Conversation: proto.String(fmt.Sprintf("from the bridge %d", i))})
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range []*Phone{bob, carol, alice} {
					got, err := p.WaitMessage(ctx, func(m Message) bool { return m.ID == resp.ID })
					if err != nil || got.Err != nil || got.Chat != g.JID || got.Text() != fmt.Sprintf("from the bridge %d", i) {
						t.Fatalf("%s got %+v (%v)", p.PushName, got, err)
					}
				}
			}
		})
	}
}

func TestReceiptsBothWays(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	id, _ := bob.SendText(ctx, alice.PN, "read me")
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == id })
	if err := cl.MarkRead(ctx, []string{id}, time.Now(), bob.PN, bob.PN); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitReceipt(ctx, func(r Receipt) bool { return r.Type == "read" && r.IDs[0] == id }); err != nil {
		t.Fatal("no read receipt reached bob")
	}
	resp, err := cl.SendMessage(ctx, bob.PN, &waE2E.Message{Conversation: proto.String("delivered?")})
	if err != nil {
		t.Fatal(err)
	}
	r := waitEvent[*events.Receipt](t, cl, func(e *events.Receipt) bool { return len(e.MessageIDs) > 0 && e.MessageIDs[0] == resp.ID })
	if r.Type != "" || r.Sender.User != bob.PN.User {
		t.Fatalf("receipt %+v", r)
	}
}

// A message the client did not acknowledge (its handler refused it) comes
// again at the next connection, as from WhatsApp's offline queue.
func TestUnacknowledgedMessageIsRedelivered(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	cl.SynchronousAck = true
	cl.EnableDecryptedEventBuffer = true
	var refuse atomic.Bool
	refuse.Store(true)
	seen := make(chan string, 10)
	cl.AddEventHandlerWithSuccessStatus(func(evt any) bool {
		if m, ok := evt.(*events.Message); ok {
			accept := !refuse.Load()
			seen <- m.Message.GetConversation()
			return accept
		}
		return true
	})
	ctx := ctxT(t)
	bob.SendText(ctx, alice.PN, "keep me")
	if got := <-seen; got != "keep me" {
		t.Fatalf("got %q", got)
	}
	if n := srv.Pending(cl.Store.GetJID()); n != 1 {
		t.Fatalf("%d stanzas wait after a refused message, want 1", n)
	}
	if n := srv.InFlight(cl.Store.GetJID()); n != 1 {
		t.Fatalf("%d stanzas in flight after a refused message, want 1", n)
	}
	refuse.Store(false)
	cl.Disconnect()
	if err := cl.Connect(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-seen:
		if got != "keep me" {
			t.Fatalf("redelivered %q", got)
		}
	case <-time.After(waitBound):
		t.Fatal("the refused message was not delivered again")
	}
	waitFor(t, "the offline queue to empty", func() bool { return srv.Pending(cl.Store.GetJID()) == 0 })
	if n := srv.Redelivered(); n != 1 {
		t.Errorf("Redelivered() = %d, want the one message the client saw and refused", n)
	}
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitBound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
