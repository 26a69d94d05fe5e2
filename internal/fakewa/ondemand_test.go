package fakewa

import (
	"fmt"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
)

func archiveOf(n int, text string) []HistoryMessage {
	var msgs []HistoryMessage
	for k := range n {
		msgs = append(msgs, HistoryMessage{FromMe: k%3 == 1, Text: fmt.Sprintf("%s %d", text, k)})
	}
	return msgs
}

// askHistory sends the request whatsmeow's users send for count messages
// of chat before anchor, and returns its message id.
func askHistory(t *testing.T, cl *client, chat types.JID, anchor HistoryMessage, count int, extra ...whatsmeow.SendRequestExtra) string {
	t.Helper()
	info := &types.MessageInfo{MessageSource: types.MessageSource{Chat: chat, IsFromMe: anchor.FromMe, IsGroup: chat.Server == types.GroupServer},
		ID: anchor.ID, Timestamp: anchor.Time}
	if extra == nil {
		extra = []whatsmeow.SendRequestExtra{{Peer: true}}
	}
	to := cl.Store.GetJID().ToNonAD()
	resp, err := cl.SendMessage(ctxT(t), to, cl.BuildHistorySyncRequest(info, count), extra...)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ID
}

// linkBooted links a device to p and waits for its link-time history:
// whatsmeow sends peer requests only over the session a phone's first
// message to a new device makes.
func linkBooted(t *testing.T, srv *Server, p *Phone, recent ...*waHistorySync.Conversation) *client {
	t.Helper()
	p.HistoryOnLink = []*waHistorySync.HistorySync{p.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP, recent...)}
	cl := link(t, srv, p)
	nthHistory(t, cl, 1)
	return cl
}

// nthHistory waits for the client's nth history sync (from 1): it
// handles notifications one at a time, in order.
func nthHistory(t *testing.T, cl *client, n int) *waHistorySync.HistorySync {
	t.Helper()
	seen := 0
	return waitEvent[*events.HistorySync](t, cl, func(*events.HistorySync) bool { seen++; return seen == n }).Data
}

// checkAnswer checks an ON_DEMAND answer: one conversation, chat id as
// asked, want's messages newest first with their ids, texts and times.
func checkAnswer(t *testing.T, hs *waHistorySync.HistorySync, chat types.JID, want []HistoryMessage) *waHistorySync.Conversation {
	t.Helper()
	if hs.GetSyncType() != waHistorySync.HistorySync_ON_DEMAND || len(hs.GetConversations()) != 1 {
		t.Fatalf("answer is %v with %d conversations", hs.GetSyncType(), len(hs.GetConversations()))
	}
	conv := hs.GetConversations()[0]
	if conv.GetID() != chat.String() || len(conv.GetMessages()) != len(want) {
		t.Fatalf("answer is chat %q with %d messages, want %v with %d", conv.GetID(), len(conv.GetMessages()), chat, len(want))
	}
	for k, hm := range conv.GetMessages() {
		w := want[len(want)-1-k]
		m := hm.GetMessage()
		if m.GetKey().GetID() != w.ID || m.GetKey().GetFromMe() != w.FromMe || m.GetMessage().GetConversation() != w.Text ||
			int64(m.GetMessageTimestamp()) != w.Time.Unix() || m.GetKey().GetRemoteJID() != chat.String() {
			t.Fatalf("message %d of the answer is %v %q at %d, want %+v", k, m.GetKey(), m.GetMessage().GetConversation(), m.GetMessageTimestamp(), w)
		}
	}
	return conv
}

func TestOnDemandHistory(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	alice.SetArchive(bob.PN, archiveOf(30, "archived")...)
	arch := alice.Archive(bob.PN)
	again := alice.Archive(bob.LID)
	now := time.Now()
	for i, m := range arch {
		if m.ID == "" || m.ID != again[i].ID || m.Time != again[i].Time {
			t.Fatalf("archived message %d has id %q at %v, then %q at %v", i, m.ID, m.Time, again[i].ID, again[i].Time)
		}
		if d := now.Sub(m.Time) - time.Duration(29-i)*time.Minute; d < 0 || d > 10*time.Second {
			t.Fatalf("archived message %d is dated %v", i, m.Time)
		}
	}

	// The device got the 10 newest on linking and asks for 5 before.
	cl := linkBooted(t, srv, alice, alice.HistoryConversation(bob.PN, "", arch[20:]...))
	other := link(t, srv, alice)
	nthHistory(t, other, 1)
	reqID := askHistory(t, cl, bob.PN, arch[20], 5)
	notif := waitEvent[*events.Message](t, cl, func(e *events.Message) bool {
		return e.Message.GetProtocolMessage().GetHistorySyncNotification().GetSyncType() == waE2E.HistorySyncType_ON_DEMAND
	}).Message.GetProtocolMessage().GetHistorySyncNotification()
	if notif.GetSyncType() != waE2E.HistorySyncType_ON_DEMAND || notif.GetPeerDataRequestSessionID() != reqID {
		t.Fatalf("notification %v for session %q, want ON_DEMAND for %q", notif.GetSyncType(), notif.GetPeerDataRequestSessionID(), reqID)
	}
	conv := checkAnswer(t, nthHistory(t, cl, 2), bob.PN, arch[15:20])
	if conv.GetLidJID() != bob.LID.String() {
		t.Fatalf("the answer's chat carries LID %q", conv.GetLidJID())
	}
	reqs := alice.OnDemandRequests()
	want := OnDemandRequest{ID: reqID, Chat: bob.PN, OldestID: arch[20].ID, OldestFromMe: arch[20].FromMe, OldestTime: arch[20].Time,
		Count: 5, From: cl.Store.GetJID(), Answered: 5}
	if len(reqs) != 1 || !reqs[0].OldestTime.Equal(want.OldestTime) {
		t.Fatalf("requests %+v, want one: %+v", reqs, want)
	}
	reqs[0].OldestTime = want.OldestTime
	if reqs[0] != want {
		t.Fatalf("request %+v, want %+v", reqs[0], want)
	}

	// Only the device that asked gets the answer: the other's first
	// history is one sent to all after it.
	marker := alice.NewHistorySync(waHistorySync.HistorySync_RECENT, alice.HistoryConversation(bob.PN, "", HistoryMessage{Text: "marker"}))
	if err := alice.SendHistorySync(ctxT(t), marker); err != nil {
		t.Fatal(err)
	}
	if got := nthHistory(t, other, 2); got.GetSyncType() != waHistorySync.HistorySync_RECENT {
		t.Fatalf("the device that did not ask got %v history", got.GetSyncType())
	}
}

// A person's archive answers requests naming them by either form; the
// answer names the chat as the request did. SetArchive again replaces it.
func TestOnDemandHistoryOtherForm(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	carol := srv.NewPhone("15550003333", "100000000000003", "Carol")
	cl := linkBooted(t, srv, alice)

	alice.SetArchive(bob.PN, archiveOf(12, "by number")...)
	arch := alice.Archive(bob.PN)
	askHistory(t, cl, bob.LID, arch[10], 3)
	if conv := checkAnswer(t, nthHistory(t, cl, 2), bob.LID, arch[7:10]); conv.GetPnJID() != bob.PN.String() {
		t.Fatalf("the LID chat carries phone number %q", conv.GetPnJID())
	}

	alice.SetArchive(bob.LID, archiveOf(6, "by LID")...)
	arch = alice.Archive(bob.PN)
	if len(arch) != 6 || arch[0].Text != "by LID 0" {
		t.Fatalf("after SetArchive by LID the archive is %+v", arch)
	}
	askHistory(t, cl, bob.PN, arch[4], 10)
	checkAnswer(t, nthHistory(t, cl, 3), bob.PN, arch[:4])

	// A group's: members' messages carry their sender.
	g := srv.NewGroup("120363000000000001", "Test group", alice, bob, carol)
	msgs := archiveOf(4, "group")
	msgs[0].Sender, msgs[2].Sender, msgs[3].Sender = srv.addressOf(g, bob), srv.addressOf(g, carol), srv.addressOf(g, bob)
	alice.SetArchive(g.JID, msgs...)
	arch = alice.Archive(g.JID)
	askHistory(t, cl, g.JID, arch[3], 2)
	conv := checkAnswer(t, nthHistory(t, cl, 4), g.JID, arch[1:3])
	gm, err := cl.ParseWebMessage(types.EmptyJID, conv.GetMessages()[0].GetMessage())
	if err != nil || gm.Info.Sender.User != carol.LID.User && gm.Info.Sender.User != carol.PN.User || len(conv.GetParticipant()) != 3 {
		t.Fatalf("newest group message of the answer %+v (%v), %d participants", gm, err, len(conv.GetParticipant()))
	}
	if reqs := alice.OnDemandRequests(); len(reqs) != 3 || reqs[0].Answered != 3 || reqs[1].Answered != 4 || reqs[2].Answered != 2 {
		t.Fatalf("requests %+v", reqs)
	}
}

// A request for what is before the oldest archived message gets an
// answer with an empty conversation; one naming a message the phone does
// not have is answered by its time.
func TestOnDemandHistoryPastTheOldest(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := linkBooted(t, srv, alice)
	alice.SetArchive(bob.PN, archiveOf(20, "archived")...)
	arch := alice.Archive(bob.PN)

	askHistory(t, cl, bob.PN, arch[0], 5)
	checkAnswer(t, nthHistory(t, cl, 2), bob.PN, nil)
	unknown := HistoryMessage{ID: NewMessageID(), Time: arch[0].Time.Add(-time.Hour)}
	askHistory(t, cl, bob.PN, unknown, 5)
	checkAnswer(t, nthHistory(t, cl, 3), bob.PN, nil)
	unknown.Time = arch[10].Time
	askHistory(t, cl, bob.PN, unknown, 5)
	checkAnswer(t, nthHistory(t, cl, 4), bob.PN, arch[5:10])
	// A chat the phone has nothing of is the same.
	askHistory(t, cl, types.NewJID("15559999999", types.DefaultUserServer), arch[10], 5)
	checkAnswer(t, nthHistory(t, cl, 5), types.NewJID("15559999999", types.DefaultUserServer), nil)

	reqs := alice.OnDemandRequests()
	if len(reqs) != 4 {
		t.Fatalf("requests %+v", reqs)
	}
	for i, r := range reqs {
		if r.Refused || r.Answered != []int{0, 0, 5, 0}[i] {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
}

// What a phone would not act on gets no answer: no count, a request that
// is not a peer message, or one from another account's device.
func TestOnDemandHistoryRefused(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := linkBooted(t, srv, alice)
	bobCl := link(t, srv, bob)
	alice.SetArchive(bob.PN, archiveOf(10, "archived")...)
	arch := alice.Archive(bob.PN)

	ids := []string{askHistory(t, cl, bob.PN, arch[5], 0)}
	waitFor(t, "the phone to take the request without a count", func() bool { return len(alice.OnDemandRequests()) == 1 })
	// As chat to itself: whatsmeow sends the phone two copies, one request.
	ids = append(ids, askHistory(t, cl, bob.PN, arch[5], 5, whatsmeow.SendRequestExtra{}))
	waitFor(t, "the phone to take the request sent as chat", func() bool { return len(alice.OnDemandRequests()) == 2 })
	info := &types.MessageInfo{MessageSource: types.MessageSource{Chat: bob.PN}, ID: arch[5].ID, Timestamp: arch[5].Time}
	resp, err := bobCl.SendMessage(ctxT(t), alice.PN, bobCl.BuildHistorySyncRequest(info, 5))
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, resp.ID)
	waitFor(t, "the phone to take bob's request", func() bool { return len(alice.OnDemandRequests()) == 3 })
	marker := alice.NewHistorySync(waHistorySync.HistorySync_RECENT, alice.HistoryConversation(bob.PN, "", HistoryMessage{Text: "marker"}))
	if err := alice.SendHistorySync(ctxT(t), marker); err != nil {
		t.Fatal(err)
	}
	if got := nthHistory(t, cl, 2); got.GetSyncType() != waHistorySync.HistorySync_RECENT {
		t.Fatalf("a refused request got %v history", got.GetSyncType())
	}
	reqs := alice.OnDemandRequests()
	if len(reqs) != 3 {
		t.Fatalf("requests %+v", reqs)
	}
	for i, r := range reqs {
		from := cl.Store.GetJID()
		if i == 2 {
			from = bobCl.Store.GetJID()
		}
		if !r.Refused || r.Answered != 0 || r.ID != ids[i] || r.From != from || r.Chat != bob.PN {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	if reqs[0].Count != 0 || reqs[1].Count != 5 {
		t.Fatalf("counts %d, %d", reqs[0].Count, reqs[1].Count)
	}
}

// With ManualHistorySyncDownload (as phonebridge runs whatsmeow) the
// answer comes as an events.Message carrying the notification, which
// whatsmeow has already acknowledged; the client downloads it itself and
// gets no events.HistorySync.
func TestOnDemandHistoryManualDownload(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	alice.SetArchive(bob.PN, archiveOf(8, "archived")...)
	arch := alice.Archive(bob.PN)
	alice.HistoryOnLink = []*waHistorySync.HistorySync{alice.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP, alice.HistoryConversation(bob.PN, "", arch[4:]...))}
	cl := link(t, srv, alice, func(c *client) { c.ManualHistorySyncDownload = true })
	notification := func(typ waE2E.HistorySyncType) *events.Message {
		return waitEvent[*events.Message](t, cl, func(e *events.Message) bool {
			n := e.Message.GetProtocolMessage().GetHistorySyncNotification()
			return n != nil && n.GetSyncType() == typ
		})
	}
	notification(waE2E.HistorySyncType_INITIAL_BOOTSTRAP)

	reqID := askHistory(t, cl, bob.PN, arch[4], 2)
	evt := notification(waE2E.HistorySyncType_ON_DEMAND)
	notif := evt.Message.GetProtocolMessage().GetHistorySyncNotification()
	if !evt.Info.IsFromMe || evt.Info.Category != "peer" || notif.GetPeerDataRequestSessionID() != reqID {
		t.Fatalf("answer %+v for session %q, want a peer message for %q", evt.Info, notif.GetPeerDataRequestSessionID(), reqID)
	}
	ctx := ctxT(t)
	hs, err := cl.DownloadHistorySync(ctx, notif, true)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, hs, bob.PN, arch[2:4])
	if _, err := alice.WaitReceipt(ctx, func(r Receipt) bool { return r.Type == "hist_sync" && r.IDs[0] == evt.Info.ID }); err != nil {
		t.Fatal("whatsmeow did not acknowledge the answer")
	}
	for _, e := range cl.events.all() {
		if _, ok := e.(*events.HistorySync); ok {
			t.Fatal("whatsmeow downloaded a history sync itself")
		}
	}
}
