package fakewa

import (
	"fmt"
	"testing"

	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// bigHistory is 20 chats of 10 messages each as alice's phone has them:
// 9 LID chats, 9 phone-number chats, a LID group and a phone-number group.
func bigHistory(t *testing.T, srv *Server, alice *Phone) *waHistorySync.HistorySync {
	t.Helper()
	var people []*Phone
	for i := range 18 {
		people = append(people, srv.NewPhone(fmt.Sprintf("1555200%04d", i), fmt.Sprintf("10000000200%04d", i), fmt.Sprintf("Person %d", i)))
	}
	lidGroup := srv.NewGroup("120363000000000101", "LID group", alice, people[0], people[1])
	lidGroup.LIDAddressing = true
	pnGroup := srv.NewGroup("120363000000000102", "PN group", alice, people[2], people[3])
	pnGroup.LIDAddressing = false
	var convs []*waHistorySync.Conversation
	for i, o := range people {
		chat := o.LID
		if i%2 == 1 {
			chat = o.PN
		}
		var msgs []HistoryMessage
		for k := range 10 {
			msgs = append(msgs, HistoryMessage{FromMe: k%3 == 1, Text: fmt.Sprintf("chat %d message %d", i, k)})
		}
		convs = append(convs, alice.HistoryConversation(chat, "", msgs...))
	}
	for _, g := range []*Group{lidGroup, pnGroup} {
		var msgs []HistoryMessage
		for k := range 10 {
			m := HistoryMessage{Text: fmt.Sprintf("%s message %d", g.Subject, k)}
			if k%4 == 0 {
				m.FromMe = true
			} else {
				m.Sender = srv.addressOf(g, g.Members(srv)[1+k%2])
			}
			msgs = append(msgs, m)
		}
		convs = append(convs, alice.HistoryConversation(g.JID, "", msgs...))
	}
	return alice.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP, convs...)
}

func TestHistorySyncArrivesWhole(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	hs := bigHistory(t, srv, alice)
	if len(hs.GetPhoneNumberToLidMappings()) != 18 {
		t.Fatalf("%d PN-LID mappings built, want 18", len(hs.GetPhoneNumberToLidMappings()))
	}
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	if err := alice.SendHistorySync(ctx, hs); err != nil {
		t.Fatal(err)
	}
	got := waitEvent[*events.HistorySync](t, cl, nil).Data
	if !proto.Equal(got, hs) {
		t.Fatal("the history sync the client decoded is not the one the phone sent")
	}
	msgs := 0
	for _, c := range got.GetConversations() {
		msgs += len(c.GetMessages())
	}
	if len(got.GetConversations()) != 20 || msgs != 200 {
		t.Fatalf("%d conversations, %d messages", len(got.GetConversations()), msgs)
	}
	// The LID chat as the client parses it: a LID chat with the phone
	// number beside it, newest message first, the sender's push name.
	first := got.GetConversations()[0]
	if first.GetID() != "100000002000000@lid" || first.GetPnJID() != "15552000000@s.whatsapp.net" {
		t.Fatalf("LID chat %q with PN %q", first.GetID(), first.GetPnJID())
	}
	newest, err := cl.ParseWebMessage(types.EmptyJID, first.GetMessages()[0].GetMessage())
	if err != nil || newest.Message.GetConversation() != "chat 0 message 9" || newest.Info.Sender.String() != "100000002000000@lid" || newest.Info.PushName != "Person 0" {
		t.Fatalf("newest message of the LID chat: %+v (%v)", newest, err)
	}
	group := got.GetConversations()[18]
	gm, err := cl.ParseWebMessage(types.EmptyJID, group.GetMessages()[0].GetMessage())
	if err != nil || gm.Info.Chat.Server != types.GroupServer || gm.Info.Sender.Server != types.HiddenUserServer || len(group.GetParticipant()) != 3 {
		t.Fatalf("LID group message %+v (%v), %d participants", gm, err, len(group.GetParticipant()))
	}
	if r, err := alice.WaitReceipt(ctx, func(r Receipt) bool { return r.Type == "hist_sync" }); err != nil || r.From != cl.Store.GetJID() {
		t.Fatalf("hist_sync receipt %+v (%v)", r, err)
	}
	// The client took the mappings in: a LID resolves to its phone number.
	waitFor(t, "the client to store the history's LID mappings", func() bool {
		pn, err := cl.Store.LIDs.GetPNForLID(ctx, types.NewJID("100000002000003", types.HiddenUserServer))
		return err == nil && pn.User == "15552000003"
	})
}

// A corrupted history file is refused: the client dispatches nothing for
// it. The client handles history notifications one at a time, in order,
// so a good one sent after it arriving first proves the bad one was
// downloaded and dropped.
func TestHistorySyncCorruptedIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rehash bool // the notification claims the corrupted file's hash: only the MAC catches it
	}{{"file hash", false}, {"mac", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, Options{})
			alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
			bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
			cl := link(t, srv, alice)
			ctx := ctxT(t)
			bad := alice.NewHistorySync(waHistorySync.HistorySync_RECENT, alice.HistoryConversation(bob.LID, "", HistoryMessage{Text: "corrupted"}))
			alice.mu.Lock()
			badID, err := alice.sendHistoryLocked(ctx, bad, nil, func(info MediaInfo) MediaInfo {
				sum, err := srv.TamperMedia(info.DirectPath)
				if err != nil {
					t.Error(err)
				}
				if tc.rehash {
					info.FileEncSHA256 = sum
				}
				return info
			})
			alice.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.WaitReceipt(ctx, func(r Receipt) bool { return r.Type == "hist_sync" && r.IDs[0] == badID }); err != nil {
				t.Fatal("the client did not take the notification")
			}
			good := alice.NewHistorySync(waHistorySync.HistorySync_RECENT, alice.HistoryConversation(bob.LID, "", HistoryMessage{Text: "intact"}))
			if err := alice.SendHistorySync(ctx, good); err != nil {
				t.Fatal(err)
			}
			got := waitEvent[*events.HistorySync](t, cl, nil)
			if text := got.Data.GetConversations()[0].GetMessages()[0].GetMessage().GetMessage().GetConversation(); text != "intact" {
				t.Fatalf("the client accepted the corrupted history (%q)", text)
			}
		})
	}
}

// A new device gets HistoryOnLink once, in order, as WhatsApp sends the
// initial bootstrap and push names after linking; a reconnection gets
// nothing again.
func TestHistoryOnLink(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	alice.HistoryOnLink = []*waHistorySync.HistorySync{
		alice.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP, alice.HistoryConversation(bob.LID, "", HistoryMessage{Text: "before the link"})),
		{SyncType: waHistorySync.HistorySync_PUSH_NAME.Enum(), Pushnames: []*waHistorySync.Pushname{{ID: proto.String(bob.PN.String()), Pushname: proto.String("Bobby")}}},
	}
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	boot := waitEvent[*events.HistorySync](t, cl, nil)
	names := waitEvent[*events.HistorySync](t, cl, func(e *events.HistorySync) bool { return e != boot })
	if boot.Data.GetSyncType() != waHistorySync.HistorySync_INITIAL_BOOTSTRAP || names.Data.GetSyncType() != waHistorySync.HistorySync_PUSH_NAME {
		t.Fatalf("history on link came as %v, %v", boot.Data.GetSyncType(), names.Data.GetSyncType())
	}
	waitFor(t, "the push name from history to reach the contact store", func() bool {
		// GetAllContacts, not GetContact: whatsmeow's GetContact copies a
		// cached entry after unlocking, racing the history's push names.
		all, err := cl.Store.Contacts.GetAllContacts(ctx)
		return err == nil && all[bob.PN].PushName == "Bobby"
	})
	cl.Disconnect()
	if err := cl.Connect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the device to be online again", func() bool { return srv.Online(cl.Store.GetJID()) })
	marker := alice.NewHistorySync(waHistorySync.HistorySync_RECENT, alice.HistoryConversation(bob.PN, "", HistoryMessage{Text: "marker"}))
	if err := alice.SendHistorySync(ctx, marker); err != nil {
		t.Fatal(err)
	}
	next := waitEvent[*events.HistorySync](t, cl, func(e *events.HistorySync) bool { return e != boot && e != names })
	if next.Data.GetSyncType() != waHistorySync.HistorySync_RECENT {
		t.Fatalf("after reconnecting the device got %v history again", next.Data.GetSyncType())
	}
}
