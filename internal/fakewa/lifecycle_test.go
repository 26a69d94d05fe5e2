package fakewa

import (
	"os"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) {
	// Keep-alives every second or two, so a silent server is noticed in
	// a test's time.
	whatsmeow.KeepAliveIntervalMin = time.Second
	whatsmeow.KeepAliveIntervalMax = 2 * time.Second
	whatsmeow.KeepAliveResponseDeadline = time.Second
	os.Exit(m.Run())
}

func TestLogoutFromThePhone(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	dev := *cl.Store.ID
	if err := alice.RemoveCompanion(dev); err != nil {
		t.Fatal(err)
	}
	lo := waitEvent[*events.LoggedOut](t, cl, nil)
	if lo.OnConnect || lo.Reason != events.ConnectFailureLoggedOut {
		t.Fatalf("logged out %+v", lo)
	}
	// The same keys can never log in again.
	again := newClient(t, srv, nil, nil)
	again.Store.ID = &dev
	again.Store.NoiseKey = cl.Store.NoiseKey
	again.Connect()
	lo = waitEvent[*events.LoggedOut](t, again, nil)
	if !lo.OnConnect {
		t.Fatalf("a removed device logging in: %+v", lo)
	}
}

func TestClientLogout(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	if err := cl.Logout(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(alice.Companions()); n != 0 {
		t.Fatalf("the phone still lists %d linked devices", n)
	}
}

func TestLoginAgainWithTheStoredDevice(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	jid := *cl.Store.ID
	cl.Disconnect()
	dev, err := cl.container.GetDevice(ctxT(t), jid)
	if err != nil || dev == nil {
		t.Fatalf("stored device: %v %v", dev, err)
	}
	bob.SendText(ctxT(t), alice.PN, "while away")
	cl2 := newClient(t, srv, cl.container, dev)
	if err := cl2.Connect(); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.Connected](t, cl2, nil)
	waitEvent[*events.Message](t, cl2, func(e *events.Message) bool { return e.Message.GetConversation() == "while away" })
	waitEvent[*events.OfflineSyncCompleted](t, cl2, nil)
}

func TestStreamReplaced(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	srv.Replace(*cl.Store.ID)
	waitEvent[*events.StreamReplaced](t, cl, nil)
}

func TestClientOutdated(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	srv.RefuseOutdated(true)
	srv.Kick(alice)
	waitEvent[*events.ClientOutdated](t, cl, nil)

	fresh := newClient(t, srv, nil, nil)
	qr, _ := fresh.GetQRChannel(ctxT(t))
	fresh.Connect()
	if item := <-qr; item != whatsmeow.QRChannelClientOutdated {
		t.Fatalf("pairing an outdated client: %+v", item)
	}
}

func TestTemporaryBan(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	srv.Ban(time.Hour)
	srv.Kick(alice)
	ban := waitEvent[*events.TemporaryBan](t, cl, nil)
	if ban.Expire != time.Hour {
		t.Fatalf("ban %+v", ban)
	}
}

func TestSilentServerAndBack(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	srv.SetSilent(true)
	waitEvent[*events.KeepAliveTimeout](t, cl, nil)
	srv.SetSilent(false)
	waitEvent[*events.KeepAliveRestored](t, cl, nil)
	bob.SendText(ctxT(t), alice.PN, "still here")
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "still here" })
}

// A message the client cannot decrypt is asked for again; the phone
// answers with a new session and the message arrives.
func TestRetryReceiptIsAnswered(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	g := srv.NewGroup("120363000000000001", "Test group", alice, bob)
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	bob.SendText(ctx, alice.PN, "first")
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "first" })
	bob.Garble(1)
	id, _ := bob.SendText(ctx, alice.PN, "garbled once")
	waitEvent[*events.UndecryptableMessage](t, cl, func(e *events.UndecryptableMessage) bool { return e.Info.ID == id })
	bob.WaitReceipt(ctx, func(r Receipt) bool { return r.Type == "retry" && r.IDs[0] == id })
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "garbled once" })

	// In a group the sender key is what is lost.
	bob.Garble(1)
	gid, _ := bob.SendText(ctx, g.JID, "group, garbled")
	waitEvent[*events.UndecryptableMessage](t, cl, func(e *events.UndecryptableMessage) bool { return e.Info.ID == gid })
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "group, garbled" })
	bob.SendText(ctx, g.JID, "group, after")
	waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Message.GetConversation() == "group, after" })
}

// Without an answer to its retry, a group member's later messages stay
// undecryptable: the client never got the sender key.
func TestUnansweredGroupRetryLosesTheSenderKey(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	g := srv.NewGroup("120363000000000001", "Test group", alice, bob)
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	bob.AnswerRetries(false)
	bob.Garble(1)
	first, _ := bob.SendText(ctx, g.JID, "lost")
	waitEvent[*events.UndecryptableMessage](t, cl, func(e *events.UndecryptableMessage) bool { return e.Info.ID == first })
	next, _ := bob.SendText(ctx, g.JID, "also lost")
	waitEvent[*events.UndecryptableMessage](t, cl, func(e *events.UndecryptableMessage) bool { return e.Info.ID == next })
}

func TestGroupChangesReachTheClient(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	carol := srv.NewPhone("15550003333", "100000000000003", "Carol")
	g := srv.NewGroup("120363000000000001", "Test group", bob, carol)
	cl := link(t, srv, alice)
	g.AddMembers(srv, bob, alice)
	joined := waitEvent[*events.JoinedGroup](t, cl, nil)
	if joined.JID != g.JID || joined.Name != "Test group" {
		t.Fatalf("joined %+v", joined)
	}
	g.SetSubject(srv, bob, "Renamed")
	waitEvent[*events.GroupInfo](t, cl, func(e *events.GroupInfo) bool { return e.Name != nil && e.Name.Name == "Renamed" })
	g.SetTopic(srv, carol, "A topic")
	waitEvent[*events.GroupInfo](t, cl, func(e *events.GroupInfo) bool { return e.Topic != nil && e.Topic.Topic == "A topic" })
	g.RemoveMembers(srv, carol, carol)
	waitEvent[*events.GroupInfo](t, cl, func(e *events.GroupInfo) bool { return len(e.Leave) == 1 && e.Leave[0].User == carol.PN.User })
	resp, err := cl.SendMessage(ctxT(t), g.JID, &waE2E.Message{Conversation: proto.String("after the changes")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitMessage(ctxT(t), func(m Message) bool { return m.ID == resp.ID && m.Err == nil }); err != nil {
		t.Fatal("bob did not get the message after the changes")
	}
}
